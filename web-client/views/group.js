//! A group page: its rooms (live participant counts), members (with who is only invited) and roles, invite links, leaving.

import { h, link, replaceChildren, uid, userParts } from '../dom.js';
import { notFound } from './notfound.js';
import { renameControl, confirmButton, copyText, formatExpiry, actionsMenu } from './widgets.js';

const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member' };
const isAdmin = (role) => role === 'admin' || role === 'owner';

export function mount(root, ctx, { gid }) {
  const page = h('section', { class: 'page' }, h('p', { class: 'muted' }, 'Loading…'));
  root.append(page);

  const head = h('div', { class: 'page-head' });
  const roomsList = h('ul', { class: 'list', testid: 'room-list' });
  const membersList = h('ul', { class: 'list', testid: 'member-list' });
  const invitesList = h('ul', { class: 'list', testid: 'invite-list' });
  const roomsCard = h('div', { class: 'card' });
  const membersCard = h('div', { class: 'card' });
  const invitesCard = h('div', { class: 'card' });
  let invites = [];
  let invitesLoaded = false;
  let built = false;
  let gone = false;
  let leaving = false; // our own leave is under way: its group_removed is expected

  const group = () => ctx.state.groups.get(gid);
  // A group whose home is another node is a read-only copy here: that node refuses changes
  // made through this one, so the controls for them are not offered.
  const local = (g) => !ctx.remoteHome(g);
  const canAdmin = (g) => isAdmin(g.role) && local(g);

  // ----- forms (built once, so typing is never interrupted by live updates) -----
  const roomNameId = uid('room-name');
  const roomInput = h('input', { id: roomNameId, required: true, maxlength: 64, placeholder: 'e.g. Lobby', testid: 'room-create-name', autocomplete: 'off' });
  const roomSubmit = h('button', { class: 'btn btn-primary', type: 'submit', testid: 'room-create-submit' }, 'Create room');
  const stageId = uid('room-stage');
  const stageBox = h('input', { id: stageId, type: 'checkbox', testid: 'room-create-stage', 'aria-describedby': `${stageId}-hint` });
  const roomForm = h('form', { class: 'stack', 'aria-label': 'Create a room' },
    h('div', { class: 'inline-form' }, h('label', { for: roomNameId, class: 'sr-only' }, 'New room name'), roomInput, roomSubmit),
    h('div', { class: 'field check' }, stageBox, h('label', { for: stageId }, 'Stage (speakers and listeners)'),
      h('p', { class: 'hint', id: `${stageId}-hint` }, 'For talks and lectures: people join in the audience with their microphone off; admins invite them to speak.')));
  roomForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = roomInput.value.trim();
    if (!name) return ctx.notify('Give the room a name.');
    const stage = stageBox.checked;
    roomSubmit.disabled = true;
    try {
      await ctx.api.createRoom(gid, name, stage);
      roomInput.value = '';
      stageBox.checked = false;
      await ctx.loadGroup(gid);
      ctx.notify(`${stage ? 'Stage' : 'Room'} “${name}” created.`, 'info');
    } catch (err) {
      ctx.showError(err);
    } finally {
      roomSubmit.disabled = false;
    }
  });

  const memberId = uid('member');
  const memberHint = uid('member-hint');
  const memberInput = h('input', { id: memberId, required: true, maxlength: 300, placeholder: 'bob or carol@beta.example', testid: 'member-add-input', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', 'aria-describedby': memberHint });
  const memberSubmit = h('button', { class: 'btn btn-primary', type: 'submit', testid: 'member-add-submit' }, 'Add member');
  const memberForm = h(
    'form',
    { class: 'stack', 'aria-label': 'Add a member' },
    h('div', { class: 'inline-form' }, h('label', { for: memberId, class: 'sr-only' }, 'Username to add'), memberInput, memberSubmit),
    h('p', { class: 'hint', id: memberHint }, 'A user of this node by name, or someone on another node as name@node.'),
  );
  memberForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const user = memberInput.value.trim();
    if (!user) return ctx.notify('Type a username to add.');
    memberSubmit.disabled = true;
    try {
      const member = await ctx.api.addMember(gid, user);
      memberInput.value = '';
      await ctx.loadGroup(gid);
      ctx.notify(member.status === 'invited'
        ? `${ctx.show(member.user)} was invited: they become a member once they accept on their node.`
        : `${ctx.show(member.user)} was added.`, 'info');
    } catch (err) {
      ctx.showError(err);
    } finally {
      memberSubmit.disabled = false;
    }
  });

  const inviteButton = h('button', { class: 'btn', type: 'button', testid: 'invite-create' }, 'Create invite link');
  inviteButton.addEventListener('click', async () => {
    inviteButton.disabled = true;
    try {
      const inv = await ctx.api.createInvite(gid, {});
      invites = [inv, ...invites.filter((i) => i.code !== inv.code)];
      renderInvites();
      const ok = await copyText(inviteUrl(inv));
      ctx.notify(ok ? 'Invite link created and copied.' : 'Invite link created.', 'info');
    } catch (err) {
      ctx.showError(err);
    } finally {
      inviteButton.disabled = false;
    }
  });

  // ----- rendering -----
  const membersTitle = h('h2', { class: 'card-title' }, 'Members');
  function build() {
    built = true;
    // Cards are assembled once; live updates replace list contents only, so a form being
    // typed into is never detached (and never loses focus).
    roomsCard.append(h('h2', { class: 'card-title' }, 'Rooms'), roomsList, roomForm);
    membersCard.append(membersTitle, membersList, memberForm);
    invitesCard.append(h('h2', { class: 'card-title' }, 'Invite links'), h('p', { class: 'hint' }, 'Anyone with the link can join: on this node by opening it, from a federated node by pasting it under “Join with an invite link” on My groups there.'), invitesList, inviteButton);
    // Invite links before the member list: on a phone they are what an admin comes for.
    replaceChildren(
      page,
      head,
      h('div', { class: 'columns' }, roomsCard, h('div', { class: 'stack' }, invitesCard, membersCard)),
    );
  }

  async function leave() {
    const name = group() ? group().name : '';
    leaving = true;
    try {
      await ctx.api.removeMember(gid, ctx.me());
    } catch (err) {
      leaving = false;
      throw err;
    }
    ctx.removeGroup(gid);
    ctx.navigate('/');
    ctx.notify(`You left “${name}”.`, 'info');
  }

  function renderHead(g) {
    const actions = h('div', { class: 'actions' });
    const home = ctx.remoteHome(g);
    if (canAdmin(g)) {
      actions.append(renameControl({ label: 'group', current: g.name, testid: 'group-rename', onError: ctx.showError, save: async (name) => ctx.storeGroup(await ctx.api.renameGroup(gid, name)) }));
    }
    if (home) {
      // This node tells the home, which removes the membership; the group goes at once.
      const question = `Leave “${g.name}”? It is managed on ${home}: to come back, someone there has to add you again, or you use an invite link.`
        + (g.role === 'owner' ? ' You are its owner: the group is left without one.' : '');
      actions.append(confirmButton({ text: 'Leave group', question, testid: 'group-leave', onError: ctx.showError, action: leave }));
    } else if (g.role === 'owner') {
      actions.append(confirmButton({ text: 'Delete group', question: `Delete “${g.name}” for everyone? This cannot be undone.`, testid: 'group-delete', onError: ctx.showError, action: async () => {
        await ctx.api.deleteGroup(gid);
        ctx.removeGroup(gid);
        ctx.navigate('/');
      } }));
    } else {
      actions.append(confirmButton({ text: 'Leave group', question: `Leave “${g.name}”?`, testid: 'group-leave', onError: ctx.showError, action: leave }));
    }
    replaceChildren(
      head,
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, link('/', {}, 'My groups')),
      h('div', { class: 'title-row' }, h('h1', { testid: 'group-title' }, g.name), h('span', { class: `badge role-${g.role}` }, ROLE_LABEL[g.role] || g.role)),
      home
        ? h('p', { class: 'managed-note', testid: 'group-managed' },
            h('strong', {}, `Managed on ${home}`),
            ` — rooms, members and invite links of this group are changed on the node ${home}; here you can talk in its rooms, or leave the group.`)
        : null,
      actions.childNodes.length ? actions : null,
    );
  }

  function renderRooms(g) {
    const editing = roomsList.querySelector('.rename form');
    if (editing) return; // do not yank an open rename form away; the next update catches up
    const rooms = [...(g.rooms || [])].sort((a, b) => a.name.localeCompare(b.name));
    replaceChildren(
      roomsList,
      rooms.length
        ? rooms.map((room) => {
            const people = ctx.participants(gid, room.id);
            const count = ctx.participantCount(gid, room.id);
            const inCall = ctx.call.inRoom(gid, room.id);
            const roomUrl = `/g/${gid}/r/${room.id}`;
            const join = inCall
              ? link(roomUrl, { class: 'btn', testid: `room-open-${room.name}` }, 'Open call')
              : h('button', { class: 'btn btn-primary', type: 'button', testid: `room-join-${room.name}`, 'aria-label': `${count ? 'Join' : 'Start call in'} ${room.name}`, onclick: () => {
                  ctx.navigate(roomUrl);
                  ctx.call.join(gid, room.id, { stage: !!room.stage });
                } }, count ? 'Join' : 'Start call');
            return h(
              'li',
              { class: 'row', dataset: { room: room.id } },
              link(`/g/${gid}/r/${room.id}`, { class: 'row-main', testid: `room-link-${room.name}` },
                h('span', { class: 'row-title' }, room.name),
                room.stage ? h('span', { class: 'badge stage-badge', testid: `room-stage-${room.name}`, title: 'A stage: speakers and listeners' }, 'Stage') : null,
                h('span', { class: 'row-sub muted', testid: `room-count-${room.name}` },
                  people.length
                    ? `${people.length} in call: ${[...new Set(people.map((p) => ctx.show(p.user)))].join(', ')}`
                    : count ? `${count} in call` : 'Nobody in call'),
              ),
              inCall ? h('span', { class: 'badge live' }, 'You are here') : count ? h('span', { class: 'badge live' }, 'Live') : null,
              h('span', { class: 'row-actions' },
                join,
                canAdmin(g)
                  ? actionsMenu({ label: `room ${room.name}`, testid: `room-menu-${room.name}`, items: [
                      renameControl({ label: `room ${room.name}`, current: room.name, testid: `room-rename-${room.name}`, onError: ctx.showError, save: async (name) => {
                        await ctx.api.renameRoom(gid, room.id, name);
                        await ctx.loadGroup(gid);
                      } }),
                      confirmButton({ text: 'Delete room', ariaLabel: `Delete room ${room.name}`, question: `Delete the room “${room.name}”? Anyone in it is dropped from the call.`, testid: `room-delete-${room.name}`, onError: ctx.showError, action: async () => {
                        await ctx.api.deleteRoom(gid, room.id);
                        await ctx.loadGroup(gid);
                      } }),
                    ] })
                  : null),
            );
          })
        : h('li', { class: 'empty-row muted' }, canAdmin(g) ? 'No rooms yet. Create the first one below.' : 'No rooms yet.'),
    );
    roomForm.hidden = !canAdmin(g);
  }

  function renderMembers(g) {
    const me = ctx.me();
    const members = [...(g.members || [])].sort((a, b) => rank(a.role) - rank(b.role) || a.user.localeCompare(b.user));
    replaceChildren(
      membersList,
      members.map((m) => {
        const self = m.user === me;
        const controls = h('span', { class: 'row-actions' });
        if (g.role === 'owner' && !self && local(g)) {
          const id = uid('role');
          // Ownership goes only to someone who can use it: a user of another node sees the
          // group read-only (and an invited one may still decline), so it would be stranded.
          const roles = !userParts(m.user, ctx.state.node).node && m.status !== 'invited' ? ['member', 'admin', 'owner'] : ['member', 'admin'];
          // The role is shown once: as this choice (no badge beside it).
          const select = h('select', { id, class: `role-select role-${m.role}`, testid: `member-role-${m.user}` },
            roles.map((r) => h('option', { value: r, selected: r === m.role }, r === 'owner' ? 'Owner (hand over)' : ROLE_LABEL[r])));
          select.addEventListener('change', async () => {
            const role = select.value;
            if (role === 'owner' && !window.confirm(`Hand ownership of “${g.name}” to ${ctx.show(m.user)}? You become an admin.`)) {
              select.value = m.role;
              return;
            }
            try {
              await ctx.api.setRole(gid, m.user, role);
              await ctx.loadGroup(gid);
            } catch (err) {
              select.value = m.role;
              ctx.showError(err);
            }
          });
          controls.append(h('label', { for: id, class: 'sr-only' }, `Role of ${ctx.show(m.user)}`), select);
        }
        const canRemove = local(g) && !self && (g.role === 'owner' ? m.role !== 'owner' : g.role === 'admin' && m.role === 'member');
        const invited = m.status === 'invited';
        if (canRemove) {
          const question = invited ? `Withdraw the invitation of ${ctx.show(m.user)} to “${g.name}”?` : `Remove ${ctx.show(m.user)} from “${g.name}”?`;
          controls.append(actionsMenu({ label: ctx.show(m.user), testid: `member-menu-${m.user}`, items: [
            confirmButton({ text: invited ? 'Withdraw invitation' : 'Remove from group', ariaLabel: `Remove ${ctx.show(m.user)}`, question, testid: `member-remove-${m.user}`, onError: ctx.showError, action: async () => {
              await ctx.api.removeMember(gid, m.user);
              await ctx.loadGroup(gid);
            } }),
          ] }));
        }
        const roleChoice = controls.querySelector('select');
        return h('li', { class: 'row', testid: `member-${m.user}` },
          h('span', { class: 'row-main' }, h('span', { class: 'avatar', 'aria-hidden': 'true' }, initial(ctx.show(m.user))), h('span', { class: 'row-title' }, ctx.label(m.user), self ? h('span', { class: 'muted' }, ' (you)') : null)),
          invited ? h('span', { class: 'badge status-invited', testid: `member-status-${m.user}`, title: 'Invited: has not accepted yet' }, 'invited') : null,
          roleChoice ? null : h('span', { class: `badge role-${m.role}` }, ROLE_LABEL[m.role] || m.role),
          controls.childNodes.length ? controls : null);
      }),
    );
    const pending = members.filter((m) => m.status === 'invited').length;
    membersTitle.textContent = pending ? `Members (${members.length - pending}, ${pending} invited)` : `Members (${members.length})`;
    memberForm.hidden = !canAdmin(g);
  }

  /** The node's own public URL for the link (so it works from other nodes), else ours. */
  function inviteUrl(inv) {
    return inv.url || `${location.origin}/invite/${encodeURIComponent(inv.code)}`;
  }

  function renderInvites() {
    const g = group();
    if (!g || !canAdmin(g)) {
      invitesCard.hidden = true;
      return;
    }
    invitesCard.hidden = false;
    replaceChildren(
      invitesList,
      invites.length
        ? invites.map((inv) => {
            const url = inviteUrl(inv);
            // The whole link, wrapped over lines (an input showed only its start); Copy
            // selects it where the clipboard is refused.
            const shown = h('code', { class: 'invite-link', testid: `invite-url-${inv.code}`, 'aria-label': 'Invite link' }, url);
            const share = navigator.share
              ? h('button', { class: 'btn', type: 'button', testid: `invite-share-${inv.code}`, onclick: async () => {
                  try {
                    await navigator.share({ title: `Join “${g.name}” on VoiceChat`, url });
                  } catch (err) {
                    if (err && err.name !== 'AbortError') ctx.notify('Could not share the link; copy it instead.');
                  }
                } }, 'Share')
              : null;
            return h('li', { class: 'row invite' },
              h('span', { class: 'row-main stack-tight' },
                shown,
                h('span', { class: 'row-sub muted' }, `${formatExpiry(inv.expires_at)} · used ${inv.uses}${inv.max_uses ? ` of ${inv.max_uses}` : ''} ${(inv.max_uses || inv.uses) === 1 ? 'time' : 'times'}`)),
              h('span', { class: 'row-actions' },
                h('button', { class: 'btn btn-primary', type: 'button', testid: `invite-copy-${inv.code}`, onclick: async () => {
                  const ok = await copyText(url, shown);
                  ctx.notify(ok ? 'Link copied.' : 'Press Ctrl+C (⌘C) to copy the selected link.', 'info');
                } }, 'Copy'),
                share,
                actionsMenu({ label: 'this invite link', testid: `invite-menu-${inv.code}`, items: [
                  confirmButton({ text: 'Revoke link', ariaLabel: 'Revoke this invite link', question: 'Revoke this invite link? It stops working at once.', testid: `invite-revoke-${inv.code}`, onError: ctx.showError, action: async () => {
                    await ctx.api.revokeInvite(gid, inv.code);
                    invites = invites.filter((i) => i.code !== inv.code);
                    renderInvites();
                  } }),
                ] })));
          })
        : h('li', { class: 'empty-row muted' }, 'No active invite links.'),
    );

  }

  async function loadInvites() {
    const g = group();
    if (!g || !canAdmin(g)) return;
    invitesLoaded = true;
    try {
      invites = await ctx.api.invites(gid);
      renderInvites();
    } catch (err) {
      if (err.status !== 403) ctx.showError(err);
    }
  }

  function render() {
    const g = group();
    if (!g || !g.members) return;
    if (!built) build();
    renderHead(g);
    renderRooms(g);
    renderMembers(g);
    renderInvites();
  }

  function showGone(text, title = 'Group not found') {
    gone = true;
    replaceChildren(page, notFound(title, text));
  }

  (async () => {
    try {
      await ctx.loadGroup(gid);
      render();
      if (!invitesLoaded) loadInvites();
    } catch (err) {
      const invitation = ctx.state.invitations.find((i) => i.group === gid);
      if (err.status === 404 && invitation) showGone(`${invitation.home} invited you to “${invitation.name}”. Accept the invitation on My groups to open it.`, 'You are invited to this group');
      else if (err.status === 404 || err.status === 400) showGone('This group does not exist, or you are not a member of it.');
      else ctx.showError(err);
    }
  })();

  return {
    update(kind, data) {
      if (gone) return;
      if (kind === 'group_removed' && data.group === gid) {
        if (leaving) return;
        showGone('This group was deleted, or you were removed from it.');
        ctx.notify('You no longer have access to this group.');
        return;
      }
      const g = group();
      if (!g || !g.members) return;
      if (kind === 'group' && data.group === gid) {
        render();
        if (canAdmin(g) && !invitesLoaded) loadInvites();
      } else if ((kind === 'participants' && data.group === gid) || (kind === 'call' && data.what === 'status')) {
        if (built) renderRooms(g);
      }
    },
  };
}

function rank(role) {
  return { owner: 0, admin: 1, member: 2 }[role] ?? 3;
}

function initial(name) {
  return (name[0] || '?').toUpperCase();
}

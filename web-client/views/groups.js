//! "My groups": invitations from groups of other nodes (live), the groups you belong to
//! (live), a form to create one, joining with an invite link, and the nodes you blocked.

import { h, link, replaceChildren, uid } from '../dom.js';

const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member' };

/** "just now", "5 min ago", "3 h ago", "2 days ago" for unix seconds. */
function ago(unixSecs) {
  const s = Math.max(0, Date.now() / 1000 - unixSecs);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

export function mount(root, ctx) {
  const nameId = uid('group-name');
  const list = h('ul', { class: 'list', testid: 'group-list', 'aria-live': 'polite' });
  const input = h('input', { id: nameId, name: 'name', required: true, maxlength: 64, placeholder: 'e.g. Book club', testid: 'group-create-name', autocomplete: 'off' });
  const submit = h('button', { class: 'btn btn-primary', type: 'submit', testid: 'group-create-submit' }, 'Create');
  const form = h(
    'form',
    { class: 'inline-form', 'aria-label': 'Create a group' },
    h('label', { for: nameId, class: 'sr-only' }, 'New group name'),
    input,
    submit,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = input.value.trim();
    if (!name) {
      ctx.notify('Give the group a name.');
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const group = await ctx.api.createGroup(name);
      ctx.storeGroup(group);
      input.value = '';
      ctx.navigate(`/g/${group.id}`);
    } catch (err) {
      ctx.showError(err);
    } finally {
      submit.disabled = false;
    }
  });

  // Join by invite link: a link of this node is simply opened; a link of another node is
  // handed to this node, which asks that node (they must federate).
  const linkId = uid('invite-link');
  const linkHint = uid('invite-link-hint');
  const linkInput = h('input', { id: linkId, type: 'url', required: true, maxlength: 500, placeholder: 'https://voice.example.org/invite/…', testid: 'join-link-input', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', 'aria-describedby': linkHint });
  const linkSubmit = h('button', { class: 'btn btn-primary', type: 'submit', testid: 'join-link-submit' }, 'Join');
  const linkForm = h(
    'form',
    { class: 'stack', 'aria-label': 'Join with an invite link', novalidate: true },
    h('div', { class: 'inline-form' }, h('label', { for: linkId, class: 'sr-only' }, 'Invite link'), linkInput, linkSubmit),
    h('p', { class: 'hint', id: linkHint }, 'Paste an invite link, from this node or from a node this one federates with.'),
  );
  linkForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = linkInput.value.trim();
    let url = null;
    try {
      url = new URL(text);
    } catch {
      /* handled below */
    }
    const m = url && /^https?:$/.test(url.protocol) ? url.pathname.match(/^\/invite\/([A-Za-z0-9_-]{1,64})\/?$/) : null;
    if (!m) {
      ctx.notify('That is not an invite link. Invite links look like https://voice.example.org/invite/… — copy the whole link.');
      linkInput.focus();
      return;
    }
    if (url.origin === location.origin) {
      ctx.navigate(`/invite/${m[1]}`);
      return;
    }
    linkSubmit.disabled = true;
    try {
      const group = await ctx.api.acceptRemoteInvite(url.href);
      ctx.storeGroup(group);
      linkInput.value = '';
      ctx.notify(`You joined “${group.name}”${group.home && group.home !== ctx.state.node ? ` (managed on ${group.home})` : ''}.`, 'info');
      ctx.navigate(`/g/${group.id}`);
    } catch (err) {
      if (err.status === 410) ctx.notify('This invite has expired, was used up, or was revoked. Ask for a new link.');
      else if (err.status === 400) ctx.notify(`Could not join with that link: ${err.message}.`);
      else ctx.showError(err);
      linkInput.focus();
    } finally {
      linkSubmit.disabled = false;
    }
  });

  // ----- invitations: groups of other nodes that added you; nothing of them shows until you accept -----
  const invTitleId = uid('invitations-title');
  const invitationsList = h('ul', { class: 'list', 'aria-labelledby': invTitleId });
  const invitationsCard = h(
    'section',
    { class: 'card card-attention', testid: 'invitations', 'aria-labelledby': invTitleId, hidden: true },
    h('h2', { class: 'card-title', id: invTitleId, tabindex: '-1' }, 'Invitations'),
    h('p', { class: 'hint' }, 'Groups on other nodes that added you. Nothing of a group shows here until you accept it.'),
    invitationsList,
  );
  const groupsTitle = h('h2', { class: 'card-title', tabindex: '-1' }, 'Your groups');
  /** Rows by invitation, reused across live updates so a focused button stays focused. */
  const invitationRows = new Map();

  /** Run `fn` with the row's buttons disabled; on failure, say why and re-read the list. */
  async function act(row, fn) {
    const buttons = [...row.querySelectorAll('button')];
    for (const b of buttons) b.disabled = true;
    try {
      await fn();
    } catch (err) {
      ctx.showError(err);
      ctx.refreshInvitations().catch(() => {});
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  /** After a row went away: focus the next invitation, else the groups heading. */
  function focusAfterAnswer() {
    const next = invitationsList.querySelector('button');
    (next || groupsTitle).focus();
  }

  function invitationRow(inv) {
    const role = ROLE_LABEL[inv.role] || inv.role;
    const row = h('li', { class: 'row invitation', testid: `invitation-${inv.name}`, dataset: { group: inv.group } });
    const accept = h('button', { class: 'btn btn-primary', type: 'button', testid: `invitation-accept-${inv.name}`, 'aria-label': `Accept the invitation to ${inv.name}` }, 'Accept');
    const decline = h('button', { class: 'btn', type: 'button', testid: `invitation-decline-${inv.name}`, 'aria-label': `Decline the invitation to ${inv.name}` }, 'Decline');
    const block = h('button', { class: 'btn btn-danger', type: 'button', testid: `invitation-block-${inv.name}`, 'aria-label': `Decline and block ${inv.home}`, title: `Decline, and decline every invitation from ${inv.home} from now on` }, `Block ${inv.home}`);
    accept.addEventListener('click', () => act(row, async () => {
      const group = await ctx.api.acceptInvitation(inv.group);
      ctx.dropInvitations((i) => i.group === inv.group);
      ctx.storeGroup(group);
      ctx.notify(`You joined “${group.name}” (managed on ${group.home}).`, 'info');
      ctx.navigate(`/g/${group.id}`);
    }));
    decline.addEventListener('click', () => act(row, async () => {
      await ctx.api.declineInvitation(inv.group);
      ctx.dropInvitations((i) => i.group === inv.group);
      ctx.notify(`You declined the invitation to “${inv.name}”.`, 'info');
      focusAfterAnswer();
    }));
    block.addEventListener('click', () => {
      if (!window.confirm(`Block ${inv.home}? This declines “${inv.name}” and every other invitation from ${inv.home}, and later ones are declined without asking you. You can unblock it on this page.`)) return;
      act(row, async () => {
        await ctx.api.blockNode(inv.home);
        ctx.dropInvitations((i) => i.home === inv.home);
        ctx.setBlocks([...new Set([...ctx.state.blocks, inv.home])]);
        ctx.notify(`You blocked ${inv.home}: its invitations are declined without asking you.`, 'info');
        focusAfterAnswer();
      });
    });
    row.append(
      h('span', { class: 'row-main' },
        h('span', { class: 'row-title' }, inv.name),
        h('span', { class: 'badge', title: `Managed on its home node ${inv.home}`, testid: `invitation-home-${inv.name}` }, `on ${inv.home}`),
        h('span', { class: `badge role-${inv.role}`, title: 'The role offered' }, `as ${role}`),
        inv.invited_at ? h('span', { class: 'row-sub muted' }, `Invited ${ago(inv.invited_at)}`) : null),
      h('span', { class: 'row-actions' }, accept, decline, block),
    );
    return row;
  }

  function renderInvitations() {
    const list = ctx.state.invitations;
    invitationsCard.hidden = !list.length;
    const keep = new Set();
    const rows = list.map((inv) => {
      const k = `${inv.group}|${inv.name}|${inv.home}|${inv.role}`;
      keep.add(k);
      if (!invitationRows.has(k)) invitationRows.set(k, invitationRow(inv));
      return invitationRows.get(k);
    });
    for (const [k, row] of invitationRows) {
      if (!keep.has(k)) {
        row.remove();
        invitationRows.delete(k);
      }
    }
    // Move only what is out of place: a row that stays put keeps its focus.
    rows.forEach((row, i) => {
      if (invitationsList.children[i] !== row) invitationsList.insertBefore(row, invitationsList.children[i] || null);
    });
  }

  // ----- nodes whose invitations you refuse -----
  const blocksTitleId = uid('blocks-title');
  const blocksList = h('ul', { class: 'list', 'aria-labelledby': blocksTitleId });
  const blocksCard = h(
    'section',
    { class: 'card', testid: 'blocked-nodes', 'aria-labelledby': blocksTitleId, hidden: true },
    h('h2', { class: 'card-title', id: blocksTitleId }, 'Blocked nodes'),
    h('p', { class: 'hint' }, 'Invitations from these nodes are declined without asking you. Invite links from them still work.'),
    blocksList,
  );

  function renderBlocks() {
    const nodes = ctx.state.blocks;
    blocksCard.hidden = !nodes.length;
    replaceChildren(
      blocksList,
      nodes.map((node) => {
        const unblock = h('button', { class: 'btn', type: 'button', testid: `unblock-${node}`, 'aria-label': `Unblock ${node}` }, 'Unblock');
        unblock.addEventListener('click', async () => {
          unblock.disabled = true;
          try {
            await ctx.api.unblockNode(node);
            ctx.setBlocks(ctx.state.blocks.filter((n) => n !== node));
            ctx.notify(`${node} is unblocked: its invitations reach you again.`, 'info');
            groupsTitle.focus();
          } catch (err) {
            if (err.status === 404) ctx.setBlocks(ctx.state.blocks.filter((n) => n !== node));
            else ctx.showError(err);
          } finally {
            unblock.disabled = false;
          }
        });
        return h('li', { class: 'row', testid: `blocked-${node}` },
          h('span', { class: 'row-main' }, h('span', { class: 'row-title' }, node)),
          h('span', { class: 'row-actions' }, unblock));
      }),
    );
  }

  function renderList() {
    const groups = [...ctx.state.groups.values()].sort((a, b) => a.name.localeCompare(b.name));
    if (!ctx.state.groupsLoaded) {
      replaceChildren(list, h('li', { class: 'muted' }, 'Loading…'));
      return;
    }
    if (!groups.length) {
      replaceChildren(list, h('li', { class: 'empty-row muted', testid: 'groups-empty' }, 'No groups yet. Create one, or open an invite link.'));
      return;
    }
    replaceChildren(
      list,
      groups.map((g) =>
        h(
          'li',
          { class: 'row', dataset: { group: g.id } },
          link(`/g/${g.id}`, { class: 'row-main', testid: `group-link-${g.name}` }, h('span', { class: 'row-title' }, g.name)),
          h('span', { class: `badge role-${g.role}` }, ROLE_LABEL[g.role] || g.role),
          ctx.remoteHome(g) ? h('span', { class: 'badge', title: `Managed on its home node ${g.home}`, testid: `group-home-${g.name}` }, `on ${g.home}`) : null,
        ),
      ),
    );
  }

  root.append(
    h(
      'section',
      { class: 'page' },
      h('div', { class: 'page-head' }, h('h1', {}, 'My groups')),
      invitationsCard,
      h('div', { class: 'card' }, h('h2', { class: 'card-title' }, 'Create a group'), form),
      h('div', { class: 'card' }, groupsTitle, list),
      h('div', { class: 'card' }, h('h2', { class: 'card-title' }, 'Join with an invite link'), linkForm),
      blocksCard,
      profileCard(ctx),
      linkCard(ctx),
    ),
  );
  renderList();
  renderInvitations();
  renderBlocks();
  ctx.refreshGroups().catch(ctx.showError);
  ctx.refreshInvitations().catch(ctx.showError);
  ctx.refreshBlocks().catch(ctx.showError);

  return {
    update(kind) {
      if (kind === 'groups' || kind === 'group' || kind === 'group_removed') renderList();
      else if (kind === 'invitations') renderInvitations();
      else if (kind === 'blocks') renderBlocks();
    },
  };
}

/** The name others see (any script), apart from the login name. */
function profileCard(ctx) {
  const inputId = uid('display-name');
  const hintId = uid('display-name-hint');
  const me = ctx.state.user;
  const input = h('input', {
    id: inputId,
    name: 'display_name',
    maxlength: 64,
    value: me.display_name || '',
    placeholder: me.name,
    autocomplete: 'name',
    testid: 'display-name-input',
    'aria-describedby': hintId,
  });
  const submit = h('button', { class: 'btn', type: 'submit', testid: 'display-name-submit' }, 'Save');
  const status = h('p', { class: 'hint', role: 'status', testid: 'display-name-status' });
  const form = h(
    'form',
    { class: 'inline-form' },
    h('label', { for: inputId, class: 'sr-only' }, 'Your name'),
    input,
    submit,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    status.textContent = '';
    try {
      const user = await ctx.setDisplayName(input.value.trim());
      input.value = user.display_name || '';
      status.textContent = user.display_name ? `Others see you as ${user.display_name}.` : `Others see you as ${user.name}.`;
    } catch (err) {
      ctx.showError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return h(
    'div',
    { class: 'card', testid: 'profile' },
    h('h2', { class: 'card-title' }, 'Your name'),
    h('p', { class: 'hint', id: hintId }, `The name others see, in any script. You sign in as ${me.name}.`),
    form,
    status,
  );
}

/** Links to sign in with this node's identity providers too (none: nothing shown). The
 * node links the provider's identity to this account when it comes back. */
function linkCard(ctx) {
  const providers = ctx.state.signIn.providers;
  if (!providers.length) return null;
  return h(
    'div',
    { class: 'card', testid: 'identity-links' },
    h('h2', { class: 'card-title' }, 'Sign-in methods'),
    h('p', { class: 'hint' }, 'Link an identity provider to this account, then sign in with it instead of a password.'),
    h('div', { class: 'button-row' }, ...providers.map((p) =>
      h('a', { class: 'btn', href: `/auth/oidc/${encodeURIComponent(p.id)}/start?link=1`, testid: `oidc-link-${p.id}` }, `Link ${p.name}`))),
  );
}

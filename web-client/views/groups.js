//! "My groups": the groups you belong to (live) and a form to create one.

import { h, link, replaceChildren, uid } from '../dom.js';

const ROLE_LABEL = { owner: 'Owner', admin: 'Admin', member: 'Member' };

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
      h('div', { class: 'card' }, h('h2', { class: 'card-title' }, 'Create a group'), form),
      h('div', { class: 'card' }, h('h2', { class: 'card-title' }, 'Your groups'), list),
      h('div', { class: 'card' }, h('h2', { class: 'card-title' }, 'Join with an invite link'), linkForm),
    ),
  );
  renderList();
  ctx.refreshGroups().catch(ctx.showError);

  return {
    update(kind) {
      if (kind === 'groups' || kind === 'group' || kind === 'group_removed') renderList();
    },
  };
}

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
          g.home && g.home !== ctx.state.node ? h('span', { class: 'badge', title: 'Home node of this group' }, `@${g.home}`) : null,
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

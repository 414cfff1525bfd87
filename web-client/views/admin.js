//! /admin: the node's administrator lists accounts, disables and re-enables them (their
//! sockets close at once), and chooses who may sign up. Others are told it is not theirs.

import { h, replaceChildren, uid } from '../dom.js';

const MODES = [
  ['open', 'Open: anyone who reaches this node'],
  ['invite-only', 'Invite-only: a group invite link is the ticket'],
  ['closed', 'Closed: only accounts I add (voicechat user add)'],
];

export function mount(root, ctx) {
  const card = h('section', { class: 'card', 'aria-labelledby': 'admin-title' }, h('h1', { id: 'admin-title' }, 'Administration'));
  root.append(card);
  if (!ctx.state.user || !ctx.state.user.admin) {
    card.append(h('p', { testid: 'admin-forbidden' }, 'Only the administrator of this node sees this page.'));
    return {};
  }
  const modeId = uid('mode');
  const select = h('select', { id: modeId, testid: 'admin-registration' }, ...MODES.map(([v, label]) => h('option', { value: v }, label)));
  const saved = h('span', { class: 'hint', role: 'status', testid: 'admin-registration-saved' });
  const body = h('tbody');
  const table = h(
    'table',
    { class: 'admin-users', testid: 'admin-users' },
    h('caption', { class: 'sr-only' }, 'Accounts of this node'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Account'), h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col' }, 'Connections'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Action')))),
    body,
  );
  card.append(
    h('div', { class: 'field' }, h('label', { for: modeId }, 'Who may sign up'), select, saved),
    h('h2', {}, 'Accounts'),
    table,
  );

  select.addEventListener('change', async () => {
    saved.textContent = '';
    try {
      const r = await ctx.api.adminSetRegistration(select.value);
      select.value = r.registration;
      ctx.state.signIn.registration = r.registration;
      saved.textContent = 'Saved.';
    } catch (err) {
      ctx.showError(err);
    }
  });

  function row(u) {
    const me = u.name === ctx.state.user.name;
    const action = h(
      'button',
      { class: 'btn', type: 'button', testid: `admin-toggle-${u.name}`, disabled: me, title: me ? 'You cannot disable your own account' : null },
      u.disabled ? 'Enable' : 'Disable',
    );
    action.addEventListener('click', async () => {
      action.disabled = true;
      try {
        await ctx.api.adminSetDisabled(u.name, !u.disabled);
        await load();
      } catch (err) {
        ctx.showError(err);
        action.disabled = false;
      }
    });
    return h(
      'tr',
      { class: u.disabled ? 'disabled' : '', testid: `admin-user-${u.name}` },
      h('td', {}, u.name, u.admin ? h('span', { class: 'hint' }, ' (administrator)') : null),
      h('td', { dataset: { label: 'Created' } }, new Date(u.created_at * 1000).toLocaleDateString()),
      h('td', { dataset: { label: 'Connections' } }, String(u.sockets)),
      h('td', { testid: `admin-status-${u.name}`, dataset: { label: 'Status' } }, u.disabled ? 'Disabled' : 'Active'),
      h('td', {}, action),
    );
  }

  async function load() {
    try {
      const [{ users }, settings] = await Promise.all([ctx.api.adminUsers(), ctx.api.adminSettings()]);
      select.value = settings.registration;
      replaceChildren(body, ...users.map(row));
    } catch (err) {
      ctx.showError(err);
    }
  }
  load();
  return {};
}

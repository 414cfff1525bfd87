//! /invite/CODE: shows the group an invite is for, with a Join button (log in first if needed).

import { h, link, replaceChildren } from '../dom.js';

export function mount(root, ctx, { code }) {
  const card = h('section', { class: 'card auth', 'aria-labelledby': 'invite-title' }, h('p', { class: 'muted' }, 'Loading the invitation…'));
  root.append(card);
  const here = `/invite/${encodeURIComponent(code)}`;

  if (!ctx.state.user) {
    replaceChildren(
      card,
      h('h1', { id: 'invite-title' }, 'You are invited'),
      h('p', {}, 'Log in, or create an account, to see and accept this invitation.'),
      h('div', { class: 'button-row' },
        link(`/login?next=${encodeURIComponent(here)}`, { class: 'btn btn-primary', testid: 'invite-login' }, 'Log in'),
        link(`/register?next=${encodeURIComponent(here)}`, { class: 'btn', testid: 'invite-register' }, 'Create an account')),
    );
    return {};
  }

  (async () => {
    let info;
    try {
      info = await ctx.api.invite(code);
    } catch (err) {
      const text = err.status === 410 ? 'This invite has expired, was used up, or was revoked. Ask for a new link.' : err.status === 404 ? 'This invite link is not valid.' : err.message;
      replaceChildren(card, h('h1', { id: 'invite-title' }, 'Invitation unavailable'), h('p', { testid: 'invite-error' }, text), link('/', { class: 'btn' }, 'Back to my groups'));
      return;
    }
    const join = h('button', { class: 'btn btn-primary btn-big', type: 'button', testid: 'invite-accept' }, 'Join group');
    join.addEventListener('click', async () => {
      join.disabled = true;
      try {
        const group = await ctx.api.acceptInvite(code);
        ctx.storeGroup(group);
        ctx.navigate(`/g/${group.id}`);
      } catch (err) {
        ctx.showError(err);
        join.disabled = false;
      }
    });
    replaceChildren(
      card,
      h('p', { class: 'muted' }, 'You are invited to join'),
      h('h1', { id: 'invite-title', testid: 'invite-group-name' }, info.group.name),
      info.expires_at ? h('p', { class: 'hint' }, `This link expires ${new Date(info.expires_at * 1000).toLocaleString()}.`) : null,
      info.already_member
        ? h('div', { class: 'stack' }, h('p', {}, 'You are already a member of this group.'), link(`/g/${info.group.id}`, { class: 'btn btn-primary', testid: 'invite-open' }, 'Open the group'))
        : h('div', { class: 'button-row' }, join, link('/', { class: 'btn btn-quiet' }, 'Not now')),
    );
    if (!info.already_member) join.focus();
  })();
  return {};
}

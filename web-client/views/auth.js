//! Log in / register screen.

import { h, link, uid } from '../dom.js';

export function mount(root, ctx, { mode }) {
  const isLogin = mode === 'login';
  const prefix = isLogin ? 'login' : 'register';
  const next = ctx.nextPath();
  const nextQuery = next ? `?next=${encodeURIComponent(next)}` : '';
  const userId = uid('username');
  const passId = uid('password');
  const hintId = uid('hint');

  const username = h('input', {
    id: userId,
    name: 'username',
    autocomplete: 'username',
    required: true,
    minlength: 3,
    maxlength: 32,
    autocapitalize: 'none',
    spellcheck: 'false',
    testid: `${prefix}-username`,
    'aria-describedby': isLogin ? null : hintId,
  });
  const password = h('input', {
    id: passId,
    name: 'password',
    type: 'password',
    autocomplete: isLogin ? 'current-password' : 'new-password',
    required: true,
    minlength: isLogin ? 1 : 8,
    maxlength: 256,
    testid: `${prefix}-password`,
  });
  const submit = h('button', { class: 'btn btn-primary', type: 'submit', testid: `${prefix}-submit` }, isLogin ? 'Log in' : 'Create account');

  const form = h(
    'form',
    { class: 'stack', novalidate: false },
    h('div', { class: 'field' }, h('label', { for: userId }, 'Username'), username),
    h(
      'div',
      { class: 'field' },
      h('label', { for: passId }, 'Password'),
      password,
      isLogin ? null : h('p', { class: 'hint', id: hintId }, '3–32 letters, digits, _ . - for the name; at least 8 characters for the password.'),
    ),
    submit,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      const res = isLogin
        ? await ctx.api.login(username.value.trim(), password.value)
        : await ctx.api.register(username.value.trim(), password.value);
      await ctx.loggedIn(res.user);
    } catch (err) {
      ctx.showError(err);
      submit.disabled = false;
      password.focus();
    }
  });

  root.append(
    h(
      'section',
      { class: 'auth card', 'aria-labelledby': `${prefix}-title` },
      h('h1', { id: `${prefix}-title` }, isLogin ? 'Log in' : 'Create an account'),
      next && next.startsWith('/invite/')
        ? h('p', { class: 'muted' }, 'Log in or create an account to accept the invitation.')
        : h('p', { class: 'muted' }, `Voice rooms for your groups${ctx.state.node ? ` on ${ctx.state.node}` : ''}.`),
      form,
      h(
        'p',
        { class: 'switch' },
        isLogin ? 'New here? ' : 'Already have an account? ',
        link(`/${isLogin ? 'register' : 'login'}${nextQuery}`, { testid: isLogin ? 'goto-register' : 'goto-login' }, isLogin ? 'Create an account' : 'Log in'),
      ),
    ),
  );
  username.focus();
  return {};
}

//! Log in / register screen: "Sign in with …" for each identity provider, the password
//! form (unless the node turned passwords off), and sign-up as the registration mode allows
//! (open; invite-only with the invite being accepted as the ticket; closed).

import { h, link, uid } from '../dom.js';

/** The invite code when `next` is an invite page, else null. */
function inviteOf(next) {
  const m = next && next.match(/^\/invite\/([^/?#]+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}

export function mount(root, ctx, { mode }) {
  const isLogin = mode === 'login';
  const prefix = isLogin ? 'login' : 'register';
  const next = ctx.nextPath();
  const nextQuery = next ? `?next=${encodeURIComponent(next)}` : '';
  const { providers, registration, passwordLogin } = ctx.state.signIn;
  const invite = inviteOf(next);
  const signInError = new URLSearchParams(location.search).get('signin_error');
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
        : await ctx.api.register(username.value.trim(), password.value, registration === 'invite-only' ? invite : null);
      await ctx.loggedIn(res.user);
    } catch (err) {
      ctx.showError(err);
      submit.disabled = false;
      password.focus();
    }
  });

  // Who may sign up here, and why not when not.
  const signUpClosed = registration === 'closed' || !passwordLogin
    ? 'This node does not take sign-ups with a password. Ask its administrator for an account.'
    : registration === 'invite-only' && !invite
      ? 'Sign-ups here need an invite link: open the link you were given.'
      : null;
  const canSignUp = registration === 'open' || (registration === 'invite-only' && invite);
  const showForm = passwordLogin && (isLogin || !signUpClosed);

  const ticket = invite && registration === 'invite-only' && !isLogin ? `&invite=${encodeURIComponent(invite)}` : '';
  const buttons = providers.map((p) =>
    h('a', { class: 'btn btn-provider', href: `/auth/oidc/${encodeURIComponent(p.id)}/start?${ticket.slice(1)}`, testid: `oidc-${p.id}` }, `Sign in with ${p.name}`),
  );

  root.append(
    h(
      'section',
      { class: 'auth card', 'aria-labelledby': `${prefix}-title` },
      h('h1', { id: `${prefix}-title` }, isLogin ? 'Log in' : 'Create an account'),
      next && next.startsWith('/invite/')
        ? h('p', { class: 'muted' }, 'Log in or create an account to accept the invitation.')
        : h('p', { class: 'muted' }, `Voice rooms for your groups${ctx.state.node ? ` on ${ctx.state.node}` : ''}.`),
      signInError ? h('p', { class: 'inline-error', role: 'alert', testid: 'signin-error' }, `Sign-in failed: ${signInError}`) : null,
      buttons.length ? h('div', { class: 'stack providers' }, ...buttons) : null,
      buttons.length && showForm ? h('p', { class: 'muted or' }, isLogin ? 'or log in with a password' : 'or choose a name and password') : null,
      !isLogin && signUpClosed ? h('p', { testid: 'signup-closed' }, signUpClosed) : null,
      showForm ? form : null,
      passwordLogin && (!isLogin || canSignUp)
        ? h(
            'p',
            { class: 'switch' },
            isLogin ? 'New here? ' : 'Already have an account? ',
            link(`/${isLogin ? 'register' : 'login'}${nextQuery}`, { testid: isLogin ? 'goto-register' : 'goto-login' }, isLogin ? 'Create an account' : 'Log in'),
          )
        : null,
    ),
  );
  if (showForm) username.focus();
  return {};
}

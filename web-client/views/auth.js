//! Log in / register screen: "Sign in with …" for each identity provider, the password
//! form (unless the node turned passwords off), and sign-up as the registration mode allows
//! (open; invite-only with the invite being accepted as the ticket; closed).

import { h, link, uid, loginName } from '../dom.js';

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
  const nameId = uid('display-name');
  const nameHintId = uid('display-name-hint');

  // Sign-up: the name others see (any script) and, made from it until edited, the login name.
  const displayName = isLogin
    ? null
    : h('input', { id: nameId, name: 'display_name', autocomplete: 'name', maxlength: 64, testid: 'register-display-name', 'aria-describedby': nameHintId });
  let usernameEdited = false;

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

  if (displayName) {
    displayName.addEventListener('input', () => {
      if (!usernameEdited) username.value = loginName(displayName.value);
    });
    username.addEventListener('input', () => {
      usernameEdited = username.value !== '';
    });
  }

  const form = h(
    'form',
    { class: 'stack', novalidate: false },
    displayName
      ? h(
          'div',
          { class: 'field' },
          h('label', { for: nameId }, 'Your name'),
          displayName,
          h('p', { class: 'hint', id: nameHintId }, 'What others see, in any script (optional).'),
        )
      : null,
    h('div', { class: 'field' }, h('label', { for: userId }, 'Username'), username),
    h(
      'div',
      { class: 'field' },
      h('label', { for: passId }, 'Password'),
      password,
      isLogin ? null : h('p', { class: 'hint', id: hintId }, 'You sign in with the username: 3–32 of a–z, 0–9, _ . - (made from your name). At least 8 characters for the password.'),
    ),
    submit,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    // A name typed with letters user names do not take ("josé"): its login form ("jose"),
    // and, signing up, the typed form becomes the display name.
    let name = username.value.trim();
    let shown = displayName ? displayName.value.trim() : '';
    if (/[^\x00-\x7f]/.test(name)) {
      if (!shown) shown = name;
      name = loginName(name);
    }
    try {
      const res = isLogin
        ? await ctx.api.login(name, password.value)
        : await ctx.api.register(name, password.value, registration === 'invite-only' ? invite : null, shown);
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
  if (showForm) (displayName || username).focus();
  return {};
}

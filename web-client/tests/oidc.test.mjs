//! Sign-in through a real OpenID provider (`oidc-provider`, started here on 127.0.0.2):
//! Chromium clicks "Sign in with Corp ID", signs in at the provider, lands signed in (the
//! first account: the node's administrator); after logging out, a second sign-in maps to
//! the same account. Refused, each with the reason on the sign-in page and nobody signed
//! in: a forged `state`, a replayed callback, a used code under a fresh state, an answer
//! naming another issuer (`iss`), and a provider whose discovery names another issuer.
//! A password account links its provider identity explicitly, then signs in with it.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor, registerOn } from './helpers.mjs';
import { startProvider } from './oidc-provider.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('OpenID Connect sign-in', { timeout: 120_000 }, () => {
  let node;
  let idp;
  let A;
  let B;
  let dir;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('oidc');
    idp = await startProvider();
    const config = path.join(dir, 'node.toml');
    fs.writeFileSync(
      config,
      `[[oidc]]\nid = "corp"\nname = "Corp ID"\nissuer = "${idp.issuer}"\nclient_id = "${idp.clientId}"\nclient_secret = "${idp.clientSecret}"\n\n` +
        `[[oidc]]\nid = "impostor"\nname = "Impostor"\nissuer = "${idp.impostor}"\nclient_id = "${idp.clientId}"\n`,
    );
    node = await startNode({ args: ['--config', config] });
    idp.configure({ redirectUris: [new URL('/auth/oidc/corp/callback', node.url).href] });
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 1 });
    A = await launchBrowser(wav);
    B = await launchBrowser(wav);
  });

  after(async () => {
    for (const b of [A, B]) if (b) await b.close();
    if (node) await node.stop();
    if (idp) idp.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const session = () => A.page.evaluate(() => fetch('/api/session').then((r) => r.json()));

  /** Starts a sign-in but stops before the provider (keeping the node's binding cookie):
   * the `state` the node sent the browser there with. */
  async function freshState() {
    let url = null;
    await A.page.route('**/auth/oidc/corp/start', async (route) => {
      const res = await route.fetch({ maxRedirects: 0 });
      url = res.headers().location;
      await route.fulfill({ status: 200, headers: { 'content-type': 'text/plain', 'set-cookie': res.headers()['set-cookie'] }, body: 'stopped before the provider' });
    });
    await A.page.goto(new URL('/auth/oidc/corp/start', node.url).href);
    await A.page.unroute('**/auth/oidc/corp/start');
    assert.ok(url, 'the node sent the browser to the provider');
    const u = new URL(url);
    assert.equal(u.searchParams.get('code_challenge_method'), 'S256', 'PKCE');
    assert.ok(u.searchParams.get('nonce'), 'a nonce');
    return u.searchParams.get('state');
  }

  async function refused(url, why) {
    await A.page.goto(url);
    await byId(A.page, 'signin-error').waitFor();
    const text = await byId(A.page, 'signin-error').textContent();
    assert.match(text, why, text);
    assert.equal((await session()).user, null, 'nobody is signed in');
    return text;
  }

  let callback = null;

  it('a first sign-in creates the account; a second maps to the same one', async () => {
    A.page.on('request', (r) => {
      if (r.url().includes('/auth/oidc/corp/callback?') && !callback) callback = r.url();
    });
    await A.page.goto(new URL('/login', node.url).href);
    const button = byId(A.page, 'oidc-corp');
    assert.equal(await button.textContent(), 'Sign in with Corp ID');
    await button.click();
    // The provider's development sign-in page, then its consent page.
    await A.page.locator('input[name="login"]').fill('ada.lovelace');
    await A.page.locator('input[name="password"]').fill('anything');
    await A.page.locator('button[type="submit"]').click();
    await A.page.locator('button[type="submit"]').click();
    await byId(A.page, 'group-list').waitFor();
    assert.equal(new URL(A.page.url()).origin, new URL(node.url).origin);
    const first = (await session()).user;
    assert.equal(first.id, 'ada.lovelace@alpha');
    assert.equal(first.admin, true, 'the first account of a fresh node administers it');
    assert.ok(callback && new URL(callback).searchParams.get('code'), 'the provider answered with a code');

    await byId(A.page, 'logout').click();
    await byId(A.page, 'login-username').waitFor();
    assert.equal((await session()).user, null);
    // Again: the provider remembers the person (no form this time), the node the link.
    await byId(A.page, 'oidc-corp').click();
    await byId(A.page, 'group-list').waitFor();
    assert.deepEqual((await session()).user, first, 'the same account');
    await byId(A.page, 'logout').click();
    await byId(A.page, 'login-username').waitFor();
  });

  it('a forged state is refused', async () => {
    await refused(new URL('/auth/oidc/corp/callback?code=forged-code&state=forged-state', node.url).href, /not valid any more/);
  });

  it('a replayed callback is refused, and so is its code under a fresh state', async () => {
    await refused(callback, /not valid any more/);
    const state = await freshState();
    const code = new URL(callback).searchParams.get('code');
    const u = new URL('/auth/oidc/corp/callback', node.url);
    u.search = new URLSearchParams({ code, state }).toString();
    await refused(u.href, /did not accept the sign-in code/);
  });

  it('an answer naming another issuer is refused, as is a provider that is not who it says', async () => {
    const state = await freshState();
    const u = new URL('/auth/oidc/corp/callback', node.url);
    u.search = new URLSearchParams({ code: 'some-code', state, iss: 'http://127.0.0.9:1' }).toString();
    await refused(u.href, /another issuer/);
    await A.page.goto(new URL('/login', node.url).href);
    await byId(A.page, 'oidc-impostor').click();
    await byId(A.page, 'signin-error').waitFor();
    assert.match(await byId(A.page, 'signin-error').textContent(), /does not say it is/);
    assert.equal((await session()).user, null);
    await waitFor(async () => (await session()).user === null, { message: 'still signed out' });
  });

  it('a password account links its provider identity, then signs in with it', async () => {
    await registerOn(B.page, node.url, 'bea', 'bea-password-1');
    await byId(B.page, 'oidc-link-corp').click();
    await B.page.locator('input[name="login"]').fill('b.smith');
    await B.page.locator('input[name="password"]').fill('anything');
    await B.page.locator('button[type="submit"]').click();
    await B.page.locator('button[type="submit"]').click();
    await byId(B.page, 'group-list').waitFor();
    const me = () => B.page.evaluate(() => fetch('/api/session').then((r) => r.json()));
    assert.equal((await me()).user.id, 'bea@alpha', 'linked, not a new account');
    await byId(B.page, 'logout').click();
    await byId(B.page, 'login-username').waitFor();
    await byId(B.page, 'oidc-corp').click();
    await byId(B.page, 'group-list').waitFor();
    assert.equal((await me()).user.id, 'bea@alpha', 'the provider signs bea in');
  });
});

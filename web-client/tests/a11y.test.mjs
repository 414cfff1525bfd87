//! Every screen of the app, at 1280 and 360 px wide (and in the dark theme), checked by
//! axe-core in real Chromium (no serious or critical violation), with sensible focus after
//! navigation (the first field of a form page, else the page's heading, never <main> or
//! <body>) and nothing wider than the window; screenshots
//! `target/screenshots/<screen>-<width>.png`.
//! Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, nodeAndBrowsers, tempDir, waitFor, registerOn, sleep } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const WIDTHS = [1280, 360];
const shots = path.join(REPO, 'target', 'screenshots');
const AXE = fs.readFileSync(path.join(REPO, 'web-client', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

// An identity provider the node knows (discovery is lazy, so it need not be up): the sign-in
// page shows "Sign in with …" and My groups its "Sign-in methods" card.
const configDir = tempDir('a11y-config');
const config = path.join(configDir, 'node.toml');
fs.writeFileSync(config, '[[oidc]]\nid = "corp"\nname = "Corp ID"\nissuer = "http://127.0.0.9/"\nclient_id = "voicechat"\n');

/** axe-core in the page (evaluated over CDP: the node's CSP allows no injected script tag). */
async function axe(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE);
  return page.evaluate(async () => {
    const res = await window.axe.run(document, { resultTypes: ['violations'] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' ')) }));
  });
}

/** The serious and critical ones fail the test; with A11Y_ALL=1 the others are printed too. */
async function serious(page, where) {
  const found = await axe(page);
  for (const v of found) {
    if (process.env.A11Y_ALL && v.impact !== 'serious' && v.impact !== 'critical') console.log(`${where}: ${v.impact} ${v.id} (${v.help}) at ${v.targets.join(', ')}`);
  }
  return found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** What has the keyboard focus: `h1` (the page's heading), `testid:<id>`, or the tag. */
function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el) return 'none';
    if (el.tagName === 'H1') return 'h1';
    if (el.dataset && el.dataset.testid) return `testid:${el.dataset.testid}`;
    return el.tagName.toLowerCase();
  });
}

describe('every screen: axe-core, focus, layout at 1280 and 360 px', { timeout: 180_000 }, () => {
  const t = nodeAndBrowsers('a11y', { node: { args: ['--config', config] } });
  let A; // ada: the first account (administrator), owner of the group
  let B; // bob: a member
  let groupUrl;
  let inviteUrl;
  const problems = []; // every screen's findings, reported together

  before(() => {
    fs.mkdirSync(shots, { recursive: true });
    [A, B] = t.browsers;
  });
  after(() => fs.rmSync(configDir, { recursive: true, force: true }));

  /**
   * Check the screen now on `page` at both widths: axe (serious/critical), no sideways
   * scrolling, a screenshot. `focus`: what must hold the focus right after the navigation
   * that opened it (checked before anything else touches the page).
   */
  async function screen(page, name, { focus } = {}) {
    if (focus) {
      const got = await waitFor(async () => {
        const f = await focused(page);
        return f === focus ? f : null;
      }, { timeout: 5000, message: `focus on ${focus} on ${name}` }).catch(async () => focused(page));
      if (got !== focus) problems.push(`${name}: focus is on ${got}, not on ${focus}`);
    }
    for (const width of WIDTHS) {
      await page.setViewportSize({ width, height: 800 });
      await sleep(150);
      for (const v of await serious(page, `${name}@${width}`)) problems.push(`${name}@${width}: ${v.impact} ${v.id} (${v.help}) at ${v.targets.join(', ')}`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 0) problems.push(`${name}@${width}: the page is ${overflow}px wider than the window`);
      await page.screenshot({ path: path.join(shots, `${name}-${width}.png`), fullPage: true });
    }
    // The dark theme (prefers-color-scheme) has its own colours: axe again in it.
    await page.emulateMedia({ colorScheme: 'dark' });
    await sleep(300); // past the buttons' colour transitions
    for (const v of await serious(page, `${name}@dark`)) problems.push(`${name}@dark: ${v.impact} ${v.id} (${v.help}) at ${v.targets.join(', ')}`);
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 1280, height: 800 });
  }

  function report() {
    const found = problems.splice(0);
    assert.deepEqual(found, [], `\n${found.join('\n')}`);
  }

  it('signing in and up: the forms, a failed sign-in, My groups with sign-in methods', async () => {
    const page = A.page;
    await page.goto(new URL('/login', t.node.url).href);
    await byId(page, 'login-username').waitFor();
    await screen(page, 'sign-in', { focus: 'testid:login-username' });
    await byId(page, 'login-username').fill('nobody');
    await byId(page, 'login-password').fill('wrong password');
    await byId(page, 'login-submit').click();
    await byId(page, 'notice').waitFor({ state: 'visible' });
    await screen(page, 'sign-in-failed', { focus: 'testid:login-password' });
    await byId(page, 'goto-register').click();
    await byId(page, 'register-username').waitFor();
    await screen(page, 'register', { focus: 'testid:register-display-name' });
    await byId(page, 'register-username').fill('ada');
    await byId(page, 'register-password').fill(PASSWORD);
    await byId(page, 'register-submit').click();
    await byId(page, 'identity-links').waitFor();
    await screen(page, 'groups-empty', { focus: 'h1' });
    report();
  });

  it('a group: as its owner, an invite landing page, as a member', async () => {
    await registerOn(B.page, t.node.url, 'bob', PASSWORD);
    const page = A.page;
    await byId(page, 'group-create-name').fill('Book club');
    await byId(page, 'group-create-submit').click();
    await byId(page, 'group-title').waitFor();
    groupUrl = page.url();
    await byId(page, 'room-create-name').fill('Lobby');
    await byId(page, 'room-create-submit').click();
    await byId(page, 'room-link-Lobby').waitFor();
    await byId(page, 'room-create-name').fill('Readings');
    await byId(page, 'room-create-stage').check();
    await byId(page, 'room-create-submit').click();
    await byId(page, 'room-link-Readings').waitFor();
    await byId(page, 'invite-create').click();
    const shown = page.locator('[data-testid^="invite-url-"]').first();
    await shown.waitFor();
    inviteUrl = (await shown.textContent()).trim();
    // Back to My groups (a list with a group now), then into the group as a person would.
    await page.locator('.brand').click();
    await byId(page, 'group-link-Book club').waitFor();
    await screen(page, 'groups', { focus: 'h1' });
    await byId(page, 'group-link-Book club').click();
    await byId(page, 'group-title').waitFor();
    await screen(page, 'group-owner', { focus: 'h1' });

    await B.page.goto(inviteUrl);
    await byId(B.page, 'invite-accept').waitFor();
    await screen(B.page, 'invite', { focus: 'testid:invite-accept' });
    await byId(B.page, 'invite-accept').click();
    await byId(B.page, 'group-title').waitFor();
    await screen(B.page, 'group-member', { focus: 'h1' });

    // My groups with an invitation from another node waiting and a blocked node: the node
    // answers for them here (federation is another test's business), the page is real.
    const invitation = { group: 'ab'.repeat(16), name: 'Choir', home: 'beta', role: 'member', invited_at: Math.floor(Date.now() / 1000) };
    await B.page.route('**/api/invitations', (r) => r.fulfill({ json: [invitation] }));
    await B.page.route('**/api/blocks', (r) => r.fulfill({ json: ['gamma'] }));
    try {
      await B.page.goto(new URL('/', t.node.url).href);
      await byId(B.page, 'invitation-Choir').waitFor();
      await byId(B.page, 'blocked-gamma').waitFor();
      await byId(B.page, 'invitations-hint').waitFor();
      await screen(B.page, 'groups-invitations', { focus: 'h1' });
    } finally {
      await B.page.unrouteAll();
    }
    report();
  });

  it('a room: before joining, in a mesh call with another person, the call strip elsewhere', async () => {
    const page = A.page;
    await byId(page, 'room-link-Lobby').click();
    await byId(page, 'call-join').waitFor();
    await screen(page, 'room', { focus: 'h1' });
    await byId(page, 'call-join').click();
    await byId(page, 'call-leave').waitFor();
    await B.page.goto(groupUrl);
    await byId(B.page, 'room-link-Lobby').click();
    await byId(B.page, 'call-join').click();
    for (const [p, other] of [[page, 'bob@alpha'], [B.page, 'ada@alpha']]) {
      await waitFor(async () => (await byId(p, `peer-state-${other}`).getAttribute('data-state')) === 'connected', { message: `connected to ${other}` });
    }
    await screen(page, 'call-mesh');
    // The call's strip in the header, on another page.
    await page.locator(`.crumbs a[href="${new URL(groupUrl).pathname}"]`).click();
    await byId(page, 'group-title').waitFor();
    await byId(page, 'callbar-mute').waitFor();
    await screen(page, 'group-in-call', { focus: 'h1' });
    await byId(page, 'callbar-mute').click();
    await screen(page, 'group-in-call-muted');
    // Back to the call's room through the strip, and out of the call.
    await byId(page, 'callbar-room').click();
    for (const p of [page, B.page]) {
      await byId(p, 'call-leave').click();
      await byId(p, 'call-join').waitFor();
    }
    report();
  });

  it('a stage: the moderator on stage, a listener with a raised hand', async () => {
    for (const p of [A.page, B.page]) {
      await p.goto(groupUrl);
      await byId(p, 'room-link-Readings').click();
      await byId(p, 'call-join').click();
    }
    await waitFor(async () => (await byId(A.page, 'stage-role').getAttribute('data-place')) === 'speaker', { message: 'ada on stage' });
    await waitFor(async () => (await byId(B.page, 'stage-role').getAttribute('data-place').catch(() => null)) === 'audience', { message: 'bob in the audience' });
    await byId(B.page, 'stage-hand').click();
    await byId(A.page, 'hand-bob@alpha').waitFor({ state: 'visible' });
    await screen(A.page, 'stage-speaker');
    await screen(B.page, 'stage-listener');
    for (const p of [A.page, B.page]) await byId(p, 'call-leave').click();
    report();
  });

  it('the admin page, and the states of things that went wrong', async () => {
    const page = A.page;
    await byId(page, 'goto-admin').click();
    await byId(page, 'admin-users').waitFor();
    await screen(page, 'admin', { focus: 'h1' });
    // Sign-up closed (seen on the sign-up page once signed out, below).
    await byId(page, 'admin-registration').selectOption('closed');
    await waitFor(async () => (await byId(page, 'admin-registration-saved').textContent()) === 'Saved.', { message: 'the mode saved' });
    // Joining fails (the node refuses the call's ICE configuration): the page says why.
    await page.route('**/api/ice*', (r) => r.fulfill({ status: 503, json: { error: 'internal', message: 'Something went wrong on the server. Try again later.' } }));
    try {
      await page.goto(new URL(`${new URL(groupUrl).pathname}`, t.node.url).href);
      await byId(page, 'room-link-Lobby').click();
      await byId(page, 'call-join').click();
      await waitFor(async () => /Could not join the call/.test(await byId(page, 'notice').textContent()), { message: 'the failed join said' });
      assert.equal(await page.evaluate(() => window.__voicechat.callStatus()), 'idle');
      await screen(page, 'room-join-failed');
    } finally {
      await page.unrouteAll();
    }
    await page.goto(new URL('/no/such/page', t.node.url).href);
    await byId(page, 'not-found').waitFor();
    await screen(page, 'not-found', { focus: 'h1' });
    await page.goto(new URL(`/g/${'0'.repeat(32)}`, t.node.url).href);
    await byId(page, 'not-found').waitFor();
    await screen(page, 'group-not-found', { focus: 'h1' });
    await page.goto(new URL('/invite/no-such-code', t.node.url).href);
    await byId(page, 'invite-error').waitFor();
    await screen(page, 'invite-invalid', { focus: 'h1' });
    // The node out of reach: the app shell from the service worker says so.
    await A.context.setOffline(true);
    try {
      await page.goto(new URL('/', t.node.url).href);
      await byId(page, 'offline').waitFor();
      await screen(page, 'offline', { focus: 'h1' });
    } finally {
      await A.context.setOffline(false);
    }
    await byId(page, 'group-list').waitFor({ timeout: 30_000 });
    // Signed out: an invite link asks to log in first.
    await byId(page, 'logout').click();
    await byId(page, 'login-username').waitFor();
    await page.goto(inviteUrl);
    await byId(page, 'invite-login').waitFor();
    await screen(page, 'invite-signed-out', { focus: 'h1' });
    await page.goto(new URL('/register', t.node.url).href);
    await byId(page, 'signup-closed').waitFor();
    await screen(page, 'register-closed', { focus: 'h1' });
    report();
  });
});

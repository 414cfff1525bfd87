//! Display names and join order: (a) signing up with "Your name" Zoë makes the login name
//! "zoe"; typing "josé" as the username signs up as "jose" shown as josé, and logging in
//! with "josé" works; (b) the member list and the call show display names, and a name
//! changed on My groups shows at once in the header; (c) everyone lists a call in the order
//! people joined it, the same on every page. Run through tests/run.sh (private netns).

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { nodeAndBrowsers, waitFor } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const PASSWORD = 'correct horse battery';

/** The user ids of the call's list, in the order the page shows them. */
const listed = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid^="participant-"][data-user]')].map((e) => e.dataset.user));

describe('display names and join order', { timeout: 150_000 }, () => {
  const t = nodeAndBrowsers('names', { browsers: [{}, {}, {}] });
  let Z;
  let J;
  let K;

  before(() => {
    [Z, J, K] = t.browsers;
  });

  it('(a) a name in any script; the login name made from it', async () => {
    await Z.page.goto(new URL('/register', t.node.url).href);
    // "Your name" first; the username is made from it.
    await byId(Z.page, 'register-display-name').fill('Zoë');
    assert.equal(await byId(Z.page, 'register-username').inputValue(), 'zoe');
    await byId(Z.page, 'register-password').fill(PASSWORD);
    await byId(Z.page, 'register-submit').click();
    await byId(Z.page, 'group-list').waitFor();
    assert.equal((await byId(Z.page, 'whoami').textContent()).trim(), 'Zoë');
    assert.equal(await byId(Z.page, 'whoami').getAttribute('title'), 'zoe@alpha');

    // "josé" typed as the username: signed up as jose, shown as josé.
    await J.page.goto(new URL('/register', t.node.url).href);
    await byId(J.page, 'register-username').fill('josé');
    await byId(J.page, 'register-password').fill(PASSWORD);
    await byId(J.page, 'register-submit').click();
    await byId(J.page, 'group-list').waitFor();
    assert.equal((await byId(J.page, 'whoami').textContent()).trim(), 'josé');
    assert.equal(await byId(J.page, 'whoami').getAttribute('title'), 'jose@alpha');
    // Logging in as "josé" works too.
    await byId(J.page, 'logout').click();
    await byId(J.page, 'login-username').waitFor();
    await byId(J.page, 'login-username').fill('josé');
    await byId(J.page, 'login-password').fill(PASSWORD);
    await byId(J.page, 'login-submit').click();
    await byId(J.page, 'group-list').waitFor();

    await K.page.goto(new URL('/register', t.node.url).href);
    await byId(K.page, 'register-username').fill('kim');
    await byId(K.page, 'register-password').fill(PASSWORD);
    await byId(K.page, 'register-submit').click();
    await byId(K.page, 'group-list').waitFor();
  });

  it('(b) display names in the member list and the call; a change shows at once', async () => {
    await byId(Z.page, 'group-create-name').fill('Choir');
    await byId(Z.page, 'group-create-submit').click();
    await byId(Z.page, 'group-title').waitFor();
    await byId(Z.page, 'room-create-name').fill('Hall');
    await byId(Z.page, 'room-create-submit').click();
    await byId(Z.page, 'room-link-Hall').waitFor();
    for (const u of ['jose', 'kim']) {
      await byId(Z.page, 'member-add-input').fill(u);
      await byId(Z.page, 'member-add-submit').click();
      await byId(Z.page, `member-${u}@alpha`).waitFor();
    }
    assert.match(await byId(Z.page, 'member-jose@alpha').textContent(), /josé/);

    // kim names himself on My groups: his header says so at once.
    await byId(K.page, 'display-name-input').fill('  Kim 김  ');
    await byId(K.page, 'display-name-submit').click();
    await waitFor(async () => (await byId(K.page, 'whoami').textContent()).trim() === 'Kim 김', { message: "kim's new name in his header" });
    assert.equal(await byId(K.page, 'display-name-input').inputValue(), 'Kim 김', 'trimmed');
  });

  it('(c) the call lists people in the order they joined, the same for everyone', async () => {
    await byId(Z.page, 'room-link-Hall').click();
    const roomUrl = Z.page.url();
    // They join one after the other: kim, then Zoë, then josé.
    for (const b of [K, Z, J]) {
      if (b.page.url() !== roomUrl) await b.page.goto(roomUrl);
      await byId(b.page, 'call-join').click();
      await byId(b.page, 'call-leave').waitFor();
      await waitFor(async () => (await b.page.evaluate(() => window.__voicechat.callStatus())) === 'joined', { message: 'joined' });
    }
    const order = ['kim@alpha', 'zoe@alpha', 'jose@alpha'];
    for (const b of [Z, J, K]) {
      await waitFor(async () => JSON.stringify(await listed(b.page)) === JSON.stringify(order), {
        message: `the join order on every page (${JSON.stringify(await listed(b.page))})`,
      });
    }
    // The names as their owners chose them.
    assert.match(await byId(J.page, 'participant-zoe@alpha').textContent(), /Zoë/);
    assert.match(await byId(Z.page, 'participant-jose@alpha').textContent(), /josé/);
    assert.match(await byId(Z.page, 'participant-kim@alpha').textContent(), /Kim 김/);
  });
});

//! Accounts in the browser: the first account administers the node (an Admin link, the
//! admin page); disabling an account signs its open page out at once and re-enabling lets
//! it back; closed registration shows no sign-up form; invite-only takes the invite link as
//! the ticket; and a second tab joining the same call takes the seat over while the first
//! says "moved to another tab".

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { nodeAndBrowsers, waitFor, registerOn, joinCall, createGroupWithInvite } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const PASSWORD = 'correct horse battery';

describe('accounts: admin page, registration modes, one call seat', { timeout: 180_000 }, () => {
  const t = nodeAndBrowsers('accounts', { wav: { seconds: 4 } });
  let node;
  let A;
  let B;

  before(() => {
    ({ node } = t);
    [A, B] = t.browsers;
  });

  const notice = (page) => page.locator('#notice');

  it('the first account administers; disabling signs the other page out at once', async () => {
    await registerOn(A.page, node.url, 'root', PASSWORD);
    await registerOn(B.page, node.url, 'bob', PASSWORD);
    assert.equal(await byId(B.page, 'goto-admin').count(), 0, 'only the administrator gets the link');
    await B.page.goto(new URL('/admin', node.url).href);
    await byId(B.page, 'admin-forbidden').waitFor();

    await byId(A.page, 'goto-admin').click();
    await byId(A.page, 'admin-user-bob').waitFor();
    assert.equal(await byId(A.page, 'admin-status-bob').textContent(), 'Active');
    assert.ok(await byId(A.page, 'admin-toggle-root').isDisabled(), 'the administrator cannot disable themself');

    await B.page.goto(new URL('/', node.url).href);
    await byId(B.page, 'group-list').waitFor();
    await byId(A.page, 'admin-toggle-bob').click();
    await waitFor(async () => (await byId(A.page, 'admin-status-bob').textContent()) === 'Disabled', { message: 'bob shown disabled' });
    // bob's open page is signed out by the node at once, and told why.
    await byId(B.page, 'login-username').waitFor({ timeout: 5_000 });
    assert.match(await notice(B.page).textContent(), /Your account was disabled/);
    await byId(B.page, 'login-username').fill('bob');
    await byId(B.page, 'login-password').fill(PASSWORD);
    await byId(B.page, 'login-submit').click();
    await waitFor(async () => /wrong user name or password/.test(await notice(B.page).textContent()), { message: 'login refused' });

    await byId(A.page, 'admin-toggle-bob').click();
    await waitFor(async () => (await byId(A.page, 'admin-status-bob').textContent()) === 'Active', { message: 'bob enabled again' });
    await byId(B.page, 'login-submit').click();
    await byId(B.page, 'group-list').waitFor();
    await byId(B.page, 'logout').click();
    await byId(B.page, 'login-username').waitFor();
  });

  it('closed shows no sign-up; invite-only signs up through an invite link', async () => {
    await A.page.goto(new URL('/admin', node.url).href);
    await byId(A.page, 'admin-user-root').waitFor();
    await byId(A.page, 'admin-registration').selectOption('closed');
    await waitFor(async () => (await byId(A.page, 'admin-registration-saved').textContent()) === 'Saved.', { message: 'mode saved' });
    await B.page.goto(new URL('/register', node.url).href);
    await byId(B.page, 'signup-closed').waitFor();
    assert.match(await byId(B.page, 'signup-closed').textContent(), /administrator/);
    assert.equal(await byId(B.page, 'register-username').count(), 0, 'no sign-up form');

    await byId(A.page, 'admin-registration').selectOption('invite-only');
    await waitFor(async () => (await A.page.evaluate(() => fetch('/api/admin/settings').then((r) => r.json()))).registration === 'invite-only', { message: 'invite-only saved' });
    await B.page.goto(new URL('/register', node.url).href);
    await byId(B.page, 'signup-closed').waitFor();
    assert.match(await byId(B.page, 'signup-closed').textContent(), /invite link/);

    await A.page.goto(new URL('/', node.url).href);
    const inviteUrl = await createGroupWithInvite(A.page, 'Choir');
    await B.page.goto(inviteUrl);
    await byId(B.page, 'invite-register').click();
    await byId(B.page, 'register-username').fill('carol');
    await byId(B.page, 'register-password').fill(PASSWORD);
    await byId(B.page, 'register-submit').click();
    // The ticket made carol a member already: the invite page says so.
    await byId(B.page, 'invite-open').waitFor();
    await byId(A.page, 'member-carol@alpha').waitFor({ timeout: 20_000 });
  });

  it('a second tab joining the call takes the seat; the first says it moved', async () => {
    await byId(A.page, 'room-create-name').fill('Hall');
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, 'room-link-Hall').click();
    await byId(A.page, 'call-join').waitFor();
    const roomUrl = A.page.url();
    await joinCall(A.page, roomUrl);
    const second = await A.context.newPage();
    await joinCall(second, roomUrl);
    await waitFor(async () => /Moved to another tab/.test(await notice(A.page).textContent()), { message: 'first tab told it moved' });
    await byId(A.page, 'call-join').waitFor();
    // The call lists root once, in the second tab's seat (not twice, hearing itself).
    await waitFor(async () => (await second.locator('[data-testid="participant-root@alpha"]').count()) === 1, { message: 'root listed once' });
    const session = await second.locator('[data-testid="participant-root@alpha"]').getAttribute('data-session');
    assert.ok(session, 'the seat has a session');
    // The first tab, out of the call, sees the same single seat: the second tab's.
    await waitFor(async () => (await A.page.locator('[data-testid="participant-root@alpha"]').count()) === 1, { message: 'one seat in the first tab too' });
    assert.equal(await A.page.locator('[data-testid="participant-root@alpha"]').getAttribute('data-session'), session);
    const seats = await second.evaluate(async () => {
      const s = await fetch('/api/admin/users').then((r) => r.json());
      return s.users.find((u) => u.name === 'root').sockets;
    });
    assert.ok(seats >= 2, `both tabs stay connected (${seats} sockets)`);
    await second.close();
  });
});

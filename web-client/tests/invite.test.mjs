//! Invite links: an admin creates one; a logged-out visitor is asked to log in (here: to
//! register), comes back to the invite, sees the group's name, joins, and lands in the group;
//! after the link is revoked it no longer works. Also: a group page screenshot at 360 px.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startNode, launchBrowser, waitFor } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('invite links', { timeout: 120_000 }, () => {
  let node;
  let A;
  let D;
  let dir;

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('invite');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 2 });
    node = await startNode();
    A = await launchBrowser(wav);
    D = await launchBrowser(wav, { viewport: { width: 360, height: 740 } });
  });

  after(async () => {
    for (const b of [A, D]) if (b) await b.close();
    if (node) await node.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a logged-out visitor registers from the invite, returns to it and joins', async () => {
    await A.page.goto(new URL('/register', node.url).href);
    await byId(A.page, 'register-username').fill('olga');
    await byId(A.page, 'register-password').fill('olga-password');
    await byId(A.page, 'register-submit').click();
    await byId(A.page, 'group-create-name').fill('Choir');
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'invite-create').click();
    const urlInput = A.page.locator('[data-testid^="invite-url-"]').first();
    await urlInput.waitFor();
    const inviteUrl = (await urlInput.textContent()).trim();
    assert.match(inviteUrl, /\/invite\/[^/]+$/);

    await D.page.goto(inviteUrl);
    await byId(D.page, 'invite-register').click();
    await byId(D.page, 'register-username').fill('dmitri');
    await byId(D.page, 'register-password').fill('dmitri-password');
    await byId(D.page, 'register-submit').click();
    await byId(D.page, 'invite-group-name').waitFor();
    assert.equal(await byId(D.page, 'invite-group-name').textContent(), 'Choir');
    assert.equal(new URL(D.page.url()).pathname, new URL(inviteUrl).pathname);
    await byId(D.page, 'invite-accept').click();
    await byId(D.page, 'group-title').waitFor();
    assert.equal(await byId(D.page, 'group-title').textContent(), 'Choir');
    // The admin sees the new member arrive live.
    await byId(A.page, 'member-dmitri@alpha').waitFor({ timeout: 20_000 });

    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    await D.page.screenshot({ path: path.join(out, 'group-360x740.png') });
    assert.ok((await D.page.evaluate(() => document.documentElement.scrollWidth - innerWidth)) <= 0, 'group page overflows at 360 px');

    // Revoked: the link stops working.
    A.page.once('dialog', (d) => d.accept());
    await A.page.locator('[data-testid^="invite-menu-"] summary').first().click();
    await A.page.locator('[data-testid^="invite-revoke-"]').first().click();
    await waitFor(async () => (await A.page.locator('[data-testid^="invite-url-"]').count()) === 0, { message: 'invite to disappear after revoking' });
    await D.page.goto(inviteUrl);
    await byId(D.page, 'invite-error').waitFor();
  });
});

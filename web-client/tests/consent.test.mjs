//! Consent across nodes: a group of another node that adds you is an invitation until you
//! answer it. Two nodes that pin each other (alpha, beta), one Chromium process per user:
//! alice on alpha's page, carol on beta's page, neither ever reloads. carol accepts one
//! invitation, declines another (it never shows in her list), answers a third with
//! "Block alpha" (a fourth then never reaches her page; "Blocked nodes" lists alpha), unblocks
//! alpha (a fifth shows again), and leaves the accepted group with "Leave group" (alice sees
//! her go, live). Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startPeeredPair, registerOn, launchBrowser, waitFor, sleep } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const KEPT = 'Kept Circle';
const DECLINED = 'Declined Circle';
const BLOCKED = 'Blocked Circle';
const SILENT = 'Silent Circle';
const AGAIN = 'Again Circle';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('invitations across nodes: accept, decline, block, unblock, leave', { timeout: 180_000 }, () => {
  let alpha;
  let beta;
  let A; // alice, on alpha
  let C; // carol, on beta
  let dir;
  const carol = 'carol@beta';

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('consent');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 2 });
    [alpha, beta] = await startPeeredPair('alpha', 'beta');
    [A, C] = await Promise.all([launchBrowser(wav), launchBrowser(wav)]);
    await Promise.all([register(A.page, alpha, 'alice'), register(C.page, beta, 'carol')]);
    await C.page.evaluate(() => {
      window.__noReload = true;
    });
  });

  after(async () => {
    for (const b of [A, C]) if (b) await b.close();
    for (const n of [alpha, beta]) if (n) await n.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const register = (page, node, username) => registerOn(page, node.url, username, PASSWORD);

  async function noReload() {
    assert.equal(await C.page.evaluate(() => window.__noReload), true, 'carol reloaded the page');
  }

  function pageErrors(b) {
    return b.consoleLines.filter((l) => l.startsWith('[pageerror]'));
  }

  /** alice creates a group on alpha's page and adds carol@beta to it (the group page stays open). */
  async function inviteCarol(name) {
    await A.page.goto(alpha.url);
    await byId(A.page, 'group-create-name').fill(name);
    await byId(A.page, 'group-create-submit').click();
    await waitFor(async () => (await byId(A.page, 'group-title').textContent().catch(() => '')) === name, { message: `alice's page to open ${name}` });
    // Until the nodes have exchanged node cards, alpha answers 400 "does not federate with".
    const deadline = Date.now() + 15_000;
    for (;;) {
      await byId(A.page, 'member-add-input').fill(carol);
      const [res] = await Promise.all([
        A.page.waitForResponse((r) => r.request().method() === 'POST' && /\/api\/groups\/[^/]+\/members$/.test(new URL(r.url()).pathname)),
        byId(A.page, 'member-add-submit').click(),
      ]);
      if (res.ok()) {
        const member = await res.json();
        assert.equal(member.status, 'invited', `alpha added ${carol} as ${member.status}`);
        return;
      }
      const body = await res.text();
      assert.match(body, /federate/, `adding ${carol} failed: ${res.status()} ${body}`);
      assert.ok(Date.now() < deadline, `alpha still does not federate with beta after 15 s: ${body}`);
      await sleep(500);
    }
  }

  /** Wait until alpha no longer lists carol in the group open on alice's page (asked of the API). */
  async function alphaDropsCarol() {
    await waitFor(
      async () => {
        const g = await A.page.evaluate(async () => (await fetch(`/api/groups/${location.pathname.split('/')[2]}`)).json());
        return Array.isArray(g.members) && !g.members.some((m) => m.user === 'carol@beta');
      },
      { message: 'alpha to remove carol after her refusal' },
    );
    await byId(A.page, `member-${carol}`).waitFor({ state: 'detached', timeout: 10_000 });
  }

  it('(a) an invitation shows live on My groups, not in the list; accepting opens the group', async () => {
    await inviteCarol(KEPT);
    // alpha shows carol as invited until she answers.
    await byId(A.page, `member-status-${carol}`).waitFor();
    assert.equal((await byId(A.page, `member-status-${carol}`).textContent()).trim(), 'invited');
    assert.match(await A.page.locator('[data-testid="member-list"]').locator('xpath=..').locator('h2').textContent(), /1 invited/);

    await byId(C.page, `invitation-${KEPT}`).waitFor({ timeout: 20_000 });
    assert.match(await byId(C.page, `invitation-${KEPT}`).textContent(), /on alpha/);
    assert.equal(await byId(C.page, `group-link-${KEPT}`).count(), 0, 'the group shows before carol accepted');
    // The page at 360 px: the invitation's buttons wrap, nothing sticks out.
    await C.page.setViewportSize({ width: 360, height: 740 });
    await sleep(200);
    const overflow = await C.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    await C.page.screenshot({ path: path.join(out, 'invitations-360x740.png'), fullPage: true });
    await C.page.setViewportSize({ width: 1280, height: 800 });
    assert.ok(overflow <= 0, `My groups with an invitation is ${overflow}px wider than 360 px`);
    await sleep(200);
    await C.page.screenshot({ path: path.join(out, 'invitations-1280x800.png') });
    await A.page.screenshot({ path: path.join(out, 'group-invited-member-1280x800.png') });

    await byId(C.page, `invitation-accept-${KEPT}`).click();
    await waitFor(async () => (await byId(C.page, 'group-title').textContent().catch(() => '')) === KEPT, { message: `carol's page to open ${KEPT}` });
    assert.match(await byId(C.page, 'group-managed').textContent(), /Managed on alpha/);
    // alpha hears the answer: carol is a member in full, live on alice's page.
    await byId(A.page, `member-status-${carol}`).waitFor({ state: 'detached', timeout: 20_000 });
    await byId(A.page, `member-${carol}`).waitFor();
    await noReload();
  });

  it('(b) a declined invitation disappears and the group never shows; alpha drops carol', async () => {
    await C.page.getByRole('link', { name: 'My groups' }).click();
    await byId(C.page, `group-link-${KEPT}`).waitFor();
    await inviteCarol(DECLINED);
    await byId(C.page, `invitation-${DECLINED}`).waitFor({ timeout: 20_000 });
    await byId(C.page, `invitation-decline-${DECLINED}`).click();
    await byId(C.page, `invitation-${DECLINED}`).waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal(await byId(C.page, 'invitations').isVisible(), false, 'the Invitations card stays with nothing in it');
    // The home removes the membership once beta tells it: live on alice's page.
    await alphaDropsCarol();
    await sleep(500);
    assert.equal(await byId(C.page, `group-link-${DECLINED}`).count(), 0, 'the declined group shows in carol\'s list');
    const groups = await C.page.evaluate(async () => (await fetch('/api/groups')).json());
    assert.ok(!groups.some((g) => g.name === DECLINED), `GET /api/groups lists the declined group: ${JSON.stringify(groups)}`);
    await noReload();
  });

  it('(c) "Block alpha" declines it; a later invitation from alpha never reaches carol; "Blocked nodes" lists alpha', async () => {
    await inviteCarol(BLOCKED);
    await byId(C.page, `invitation-${BLOCKED}`).waitFor({ timeout: 20_000 });
    assert.equal((await byId(C.page, `invitation-block-${BLOCKED}`).textContent()).trim(), 'Block alpha');
    C.page.once('dialog', (d) => d.accept());
    await byId(C.page, `invitation-block-${BLOCKED}`).click();
    await byId(C.page, `invitation-${BLOCKED}`).waitFor({ state: 'detached', timeout: 10_000 });
    await byId(C.page, 'blocked-alpha').waitFor();
    assert.equal(await byId(C.page, 'blocked-nodes').isVisible(), true);
    assert.equal(await byId(C.page, 'invitations').isVisible(), false);
    await alphaDropsCarol();

    // A fourth group: alpha accepts the addition, beta declines it on carol's behalf, silently.
    await inviteCarol(SILENT);
    // alpha hears the refusal (carol leaves the member list): beta has seen and answered it.
    await alphaDropsCarol();
    await sleep(3000);
    assert.equal(await byId(C.page, `invitation-${SILENT}`).count(), 0, 'an invitation from a blocked node reached carol');
    assert.equal(await byId(C.page, 'invitations').isVisible(), false);
    assert.equal(await byId(C.page, 'invitations-hint').count(), 0);
    assert.equal(await byId(C.page, `group-link-${SILENT}`).count(), 0);
    const pending = await C.page.evaluate(async () => (await fetch('/api/invitations')).json());
    assert.deepEqual(pending, [], 'GET /api/invitations lists an invitation from a blocked node');
    // Still blocked after a reload of the list from the node.
    assert.deepEqual(await C.page.evaluate(async () => (await fetch('/api/blocks')).json()), ['alpha']);
    await noReload();
  });

  it('(d) after "Unblock", an invitation from alpha shows again', async () => {
    await byId(C.page, 'unblock-alpha').click();
    await byId(C.page, 'blocked-alpha').waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal(await byId(C.page, 'blocked-nodes').isVisible(), false);
    await inviteCarol(AGAIN);
    await byId(C.page, `invitation-${AGAIN}`).waitFor({ timeout: 20_000 });
    assert.match(await byId(C.page, 'invitations-hint').textContent(), /1 invitation/);
    await byId(A.page, `member-status-${carol}`).waitFor();
    await noReload();
  });

  it('(e) carol leaves the accepted group: it leaves her list, and alice sees her go, live', async () => {
    await A.page.goto(alpha.url);
    await byId(A.page, `group-link-${KEPT}`).click();
    await byId(A.page, `member-${carol}`).waitFor();

    await byId(C.page, `group-link-${KEPT}`).click();
    await waitFor(async () => (await byId(C.page, 'group-title').textContent().catch(() => '')) === KEPT, { message: `carol's page to open ${KEPT}` });
    C.page.once('dialog', (d) => d.accept());
    await byId(C.page, 'group-leave').click();
    await byId(C.page, 'group-list').waitFor({ timeout: 10_000 });
    assert.equal(new URL(C.page.url()).pathname, '/');
    await waitFor(async () => /You left/.test((await byId(C.page, 'notice').textContent()) || ''), { timeout: 5_000, message: 'a "You left" notice' });
    assert.equal(await byId(C.page, `group-link-${KEPT}`).count(), 0, 'the group is still in carol\'s list');
    await byId(A.page, `member-${carol}`).waitFor({ state: 'detached', timeout: 20_000 });
    // The pending invitation is untouched by leaving another group.
    assert.equal(await byId(C.page, `invitation-${AGAIN}`).isVisible(), true);
    await noReload();
    assert.deepEqual(pageErrors(A), []);
    assert.deepEqual(pageErrors(C), []);
  });
});

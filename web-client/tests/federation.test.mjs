//! Two federated nodes that pin each other (alpha with `--peer /p2p/<beta's id>`, beta with
//! `--peer <alpha's multiaddr>`), one Chromium process per user: alice on alpha's page, carol
//! on beta's page. alice adds carol@beta through the UI; the invitation appears live on
//! beta (not the group), carol accepts and the group shows; it is read-only there
//! ("Managed on alpha", only "Leave group");
//! both join the call across the nodes with audio both ways over DTLS-SRTP, encrypted end to
//! end with keys that crossed the nodes in signed signals (one safety code); a second group
//! is joined by pasting an alpha invite link into beta's "Join with an invite link" field.
//! Run through tests/run.sh (private netns).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startPeeredPair, registerOn, launchBrowser, waitFor, audioStats, sleep, createGroupWithInvite } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
const GROUP = 'Across Nodes';
const ROOM = 'Bridge';
const SECOND = 'Second Circle';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('a call across two federated nodes', { timeout: 180_000 }, () => {
  let alpha;
  let beta;
  let A; // alice, on alpha
  let C; // carol, on beta
  let dir;
  const alice = 'alice@alpha';
  const carol = 'carol@beta';

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('fed');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
    [alpha, beta] = await startPeeredPair('alpha', 'beta');
    [A, C] = await Promise.all([launchBrowser(wav), launchBrowser(wav)]);
  });

  after(async () => {
    for (const b of [A, C]) if (b) await b.close();
    for (const n of [alpha, beta]) if (n) await n.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    for (const [who, b] of [['A', A], ['C', C]]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
    }
  });

  const register = (page, node, username) => registerOn(page, node.url, username, PASSWORD);

  async function noticeText(page) {
    const n = byId(page, 'notice');
    return (await n.isVisible()) ? (await n.textContent()) || '' : '';
  }

  it('(a) alice adds carol@beta through the UI; carol gets an invitation live, accepts, and the group shows, managed on alpha', async () => {
    await Promise.all([register(A.page, alpha, 'alice'), register(C.page, beta, 'carol')]);
    await C.page.evaluate(() => {
      window.__noReload = true;
    });

    await byId(A.page, 'group-create-name').fill(GROUP);
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'room-create-name').fill(ROOM);
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, `room-link-${ROOM}`).waitFor();

    // Until the nodes have exchanged node cards, alpha answers 400 "does not federate with".
    const deadline = Date.now() + 15_000;
    for (;;) {
      await byId(A.page, 'member-add-input').fill(carol);
      await byId(A.page, 'member-add-submit').click();
      const added = await byId(A.page, `member-${carol}`).waitFor({ timeout: 1500 }).then(() => true, () => false);
      if (added) break;
      const notice = await noticeText(A.page);
      assert.match(notice, /federate/, `adding ${carol} failed: ${notice}`);
      assert.ok(Date.now() < deadline, `alpha still does not federate with beta after 15 s: ${notice}`);
      await sleep(500);
    }
    assert.equal((await byId(A.page, `member-${carol}`).textContent()).includes('carol · beta'), true, 'alpha shows carol with her node');
    // Until carol answers, alpha shows her as invited.
    assert.equal((await byId(A.page, `member-status-${carol}`).textContent()).trim(), 'invited');

    // carol never reloads: the invitation arrives over beta's socket; the group itself does not show.
    const row = byId(C.page, `invitation-${GROUP}`);
    await row.waitFor({ timeout: 20_000 });
    assert.equal(await C.page.evaluate(() => window.__noReload), true, 'carol reloaded the page');
    assert.equal(await byId(C.page, 'invitations').isVisible(), true);
    const text = await row.textContent();
    assert.match(text, /on alpha/);
    assert.match(text, /Member/);
    assert.match(await byId(C.page, 'invitations-hint').textContent(), /1 invitation/);
    assert.equal(await byId(C.page, `group-link-${GROUP}`).count(), 0, 'the group shows before carol accepted');

    await byId(C.page, `invitation-accept-${GROUP}`).click();
    await byId(C.page, 'group-title').waitFor({ timeout: 20_000 });
    assert.equal(await byId(C.page, 'group-title').textContent(), GROUP);
    assert.equal(await byId(C.page, 'invitations-hint').count(), 0, 'the header still counts an answered invitation');
    // alpha learns the answer: carol is a member in full there, live.
    await byId(A.page, `member-status-${carol}`).waitFor({ state: 'detached', timeout: 20_000 });
    assert.equal(await C.page.evaluate(() => window.__noReload), true, 'carol reloaded the page');
    assert.match(await byId(C.page, 'group-managed').textContent(), /Managed on alpha/);
    await byId(C.page, `room-link-${ROOM}`).waitFor();
    await byId(C.page, `member-${alice}`).waitFor();
    assert.match(await byId(C.page, `member-${alice}`).textContent(), /alice · alpha/);
  });

  it('(b) on beta the remote group stays read-only, even for an admin', async () => {
    // alice makes carol an admin on alpha; beta's copy shows the role live, but no controls.
    await byId(A.page, `member-role-${carol}`).selectOption('admin');
    await waitFor(async () => (await byId(C.page, 'group-title').locator('xpath=..').textContent()).includes('Admin'), {
      message: "carol's page on beta to show her new role (Admin) live",
    });
    assert.equal(await C.page.evaluate(() => window.__noReload), true, 'carol reloaded the page');
    assert.match(await byId(C.page, 'group-managed').textContent(), /Managed on alpha/);
    for (const id of ['room-create-name', 'member-add-input', 'invite-create']) {
      assert.equal(await byId(C.page, id).isVisible(), false, `${id} is offered on beta`);
    }
    // Leaving is the one change made from here (beta tells alpha).
    assert.equal(await byId(C.page, 'group-leave').isVisible(), true, 'no "Leave group" on the remote group');
    for (const id of ['group-rename', 'group-delete', `room-rename-${ROOM}`, `room-delete-${ROOM}`, `member-role-${alice}`, `member-remove-${alice}`]) {
      assert.equal(await byId(C.page, id).count(), 0, `${id} is offered on beta`);
    }
    // alpha, the home node, still offers them to its admins.
    assert.equal(await byId(A.page, 'group-managed').count(), 0);
    assert.equal(await byId(A.page, 'invite-create').isVisible(), true);

    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    for (const [w, hgt] of [[1280, 800], [390, 844]]) {
      await C.page.setViewportSize({ width: w, height: hgt });
      await sleep(300);
      await C.page.screenshot({ path: path.join(out, `group-remote-${w}x${hgt}.png`) });
      const overflow = await C.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the remote group page is ${overflow}px wider than the ${w}px viewport`);
    }
    await C.page.setViewportSize({ width: 1280, height: 800 });
  });

  it('(c) both join the call across the nodes; each sees the other with their node', async () => {
    await byId(A.page, `room-link-${ROOM}`).click();
    await byId(A.page, 'call-join').click();
    await byId(A.page, 'call-leave').waitFor();
    await byId(A.page, `participant-${alice}`).waitFor();

    await byId(C.page, `room-link-${ROOM}`).click();
    await waitFor(async () => (await byId(C.page, 'call-join').textContent()).trim() === 'Join', {
      message: 'carol (beta) to see "Join": alice\'s presence on alpha reaching beta',
    });
    await byId(C.page, 'call-join').click();
    await byId(C.page, 'call-leave').waitFor();

    for (const [page, other, label] of [[A.page, carol, 'carol · beta'], [C.page, alice, 'alice · alpha']]) {
      await byId(page, `participant-${other}`).waitFor({ timeout: 20_000 });
      assert.equal((await byId(page, `participant-name-${other}`).textContent()).trim(), label);
      await waitFor(async () => (await byId(page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', {
        message: `peer state of ${other} to be "connected"`,
      });
    }
  });

  it('(d) audio flows both ways; DTLS connected with an SRTP cipher', async () => {
    for (const [name, page] of [['alice (alpha)', A.page], ['carol (beta)', C.page]]) {
      const first = await audioStats(page);
      assert.equal(first.peers, 1, `${name} should have exactly one peer connection`);
      await waitFor(
        async () => {
          const s = await audioStats(page);
          return s.packetsReceived > first.packetsReceived + 50 && s.totalAudioEnergy > first.totalAudioEnergy;
        },
        { message: `${name} to receive audio packets with rising energy` },
      );
      await waitFor(async () => (await audioStats(page)).audioLevel > 0.001, { interval: 100, message: `${name} to see a non-zero audioLevel` });
      const s = await audioStats(page);
      assert.ok(s.totalAudioEnergy > 0, `${name}: totalAudioEnergy is 0`);
      assert.ok(s.dtlsStates.length > 0 && s.dtlsStates.every((d) => d === 'connected'), `${name}: dtls states ${s.dtlsStates}`);
      assert.ok(s.srtpCiphers.length > 0 && s.srtpCiphers.every(Boolean), `${name}: no srtpCipher reported`);
    }
  });

  it('(d2) the keys crossed the nodes: each decrypts the other end to end, one safety code', async () => {
    for (const [name, page] of [['alice (alpha)', A.page], ['carol (beta)', C.page]]) {
      await waitFor(async () => ((await page.evaluate(() => window.__voicechat.e2ee())).stats || {}).decrypted > 50, { message: `${name} to decrypt the other's frames` });
      const e = await page.evaluate(() => window.__voicechat.e2ee());
      assert.ok(e.on, `${name}: the page encrypts end to end`);
      assert.ok(e.stats.encrypted > 50 && e.stats.plaintext === 0 && e.stats.failed_unwraps === 0, `${name}: ${JSON.stringify(e.stats)}`);
      assert.match(await byId(page, 'call-transport').textContent(), /straight between browsers, encrypted end to end/);
    }
    const codes = await Promise.all([A.page, C.page].map((p) => byId(p, 'safety-code').getAttribute('data-code')));
    assert.match(codes[0], /^\d{4} \d{4} \d{4} \d{4}$/);
    assert.equal(codes[0], codes[1], 'the same safety code on alpha and on beta');
  });

  it('(e) alice leaves; carol on beta sees it and closes the connection', async () => {
    await byId(A.page, 'call-leave').click();
    await byId(A.page, 'call-join').waitFor();
    await byId(C.page, `participant-${alice}`).waitFor({ state: 'detached', timeout: 20_000 });
    await waitFor(async () => (await C.page.evaluate(() => window.__voicechat.peers().size)) === 0, { message: 'carol to close her connection to alice' });
    await byId(C.page, 'call-leave').click();
    await byId(C.page, 'call-join').waitFor();
  });

  it("(f) carol joins a second group by pasting alpha's invite link into beta's join field", async () => {
    await A.page.goto(alpha.url);
    const link = await createGroupWithInvite(A.page, SECOND);
    // alice is in a call of it when carol comes in: carol's page must show her at once,
    // never "Nobody in call".
    await byId(A.page, 'room-create-name').fill('Talk');
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, 'room-link-Talk').click();
    await byId(A.page, 'call-join').click();
    await byId(A.page, 'call-leave').waitFor();
    // The node's public URL, so the link works when pasted on another node.
    assert.ok(link.startsWith(alpha.url.replace(/\/$/, '') + '/invite/'), `invite link ${link} is not on alpha's public URL ${alpha.url}`);

    await C.page.goto(beta.url);
    const input = byId(C.page, 'join-link-input');
    const submit = byId(C.page, 'join-link-submit');

    // Errors in words: a link of an unknown node, a dead code of alpha.
    await input.fill('http://localhost:9/invite/abcdef');
    await submit.click();
    await waitFor(async () => /Could not join with that link/.test(await noticeText(C.page)), { timeout: 10_000, message: 'an error for a link of an unknown node' });
    await input.fill(link.replace(/\/invite\/.*$/, '/invite/0123456789abcdef0123456789abcdef'));
    await submit.click();
    await waitFor(async () => /expired, was used up, or was revoked/.test(await noticeText(C.page)), { timeout: 10_000, message: 'an error for a dead invite code' });
    assert.equal(await byId(C.page, `group-link-${SECOND}`).count(), 0);

    // Every text carol's page shows for the room's call, from its first.
    await C.page.evaluate(() => {
      window.__talk = [];
      const note = () => {
        const el = document.querySelector('[data-testid="room-count-Talk"]');
        const t = el && el.textContent.trim();
        if (t && window.__talk[window.__talk.length - 1] !== t) window.__talk.push(t);
      };
      new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await input.fill(link);
    await submit.click();
    await byId(C.page, 'group-title').waitFor({ timeout: 20_000 });
    await waitFor(async () => (await C.page.evaluate(() => window.__talk.length)) > 0, { message: "the room's row on carol's page" });
    await sleep(1000);
    const shown = await C.page.evaluate(() => window.__talk);
    assert.deepEqual(shown, [`1 in call: alice · alpha`], `what carol's page showed for the call: ${JSON.stringify(shown)}`);
    assert.equal(await byId(C.page, 'group-title').textContent(), SECOND);
    assert.equal(new URL(C.page.url()).origin, new URL(beta.url).origin, 'carol left her own node');
    assert.match(await byId(C.page, 'group-managed').textContent(), /Managed on alpha/);
    // alpha's admin, back on the group's page, sees the new member.
    await byId(A.page, 'call-leave').click();
    await A.page.goBack();
    await byId(A.page, `member-${carol}`).waitFor({ timeout: 20_000 });
    // And it is listed on carol's My groups, as a group of alpha.
    await byId(C.page, 'group-title').locator('xpath=ancestor::section').getByRole('link', { name: 'My groups' }).click();
    await byId(C.page, `group-home-${SECOND}`).waitFor();
    // The accepted invitation's group is listed too; no invitation is left.
    assert.equal((await byId(C.page, `group-home-${GROUP}`).textContent()).trim(), 'on alpha');
    assert.equal(await byId(C.page, 'invitations').isVisible(), false);
    await C.page.screenshot({ path: path.join(REPO, 'target', 'screenshots', 'groups-remote-1280x800.png'), fullPage: true });
  });
});

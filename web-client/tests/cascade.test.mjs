//! A lecture across three federated nodes, each person connected only to their own node:
//! a stage room homed on alpha, bob speaking from a Chromium on beta, Chromium listeners on
//! alpha (dan) and gamma (cat). Their pages open no browser-to-browser connection: bob's
//! audio reaches them through beta's audio server and their own node's (the cascade), still
//! end-to-end encrypted, and they hear it (audioLevel > 0); their pages name bob on the slot
//! his audio comes on and show him speaking on stage. Synthetic listeners on all three nodes
//! (`testnet crowd`) hear bob too, while alpha and gamma each receive exactly one copy of his
//! stream (their metrics). It prints mouth-to-ear latency, Chromium to Chromium, from bob to
//! eve (a listener on beta: one node) and to dan (across the cascade), in the same run. cat,
//! made a moderator, invites dan from her page: the invitation goes through alpha (the
//! group's home), dan accepts, and bob, cat and eve hear him. Then gamma is killed
//! mid-lecture: dan goes on hearing bob with no gap in packets over 1 s, and his page says
//! "gamma unreachable".
//! Run through tests/run.sh.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, assertPrivateNetns, tempDir, writeBeepWav, startNode, nodeId, launchBrowser, waitFor, registerOn, sleep, sfuStats, Http, pageApi, soundingTracks, testnetBin, crowd, watchOnsets } from './helpers.mjs';

const PASSWORD = 'correct horse battery';
/** Synthetic listeners on each node (`testnet crowd`). */
const CROWD = 8;
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Each heard onset minus the last sent onset before it (within 400 ms), sorted. */
function latencies(sent, heard) {
  const out = [];
  for (const h of heard) {
    const before = sent.filter((t) => t <= h && h - t < 400);
    if (before.length) out.push(h - before[before.length - 1]);
  }
  return out.sort((a, b) => a - b);
}

const median = (v) => (v.length ? v[Math.floor(v.length / 2)].toFixed(0) : 'n/a');

describe('a lecture across three nodes: the audio servers cascade', { timeout: 240_000 }, () => {
  let alpha;
  let beta;
  let gamma;
  let dir;
  let B; // bob@beta, the speaker
  let D; // dan@alpha, a listener
  let C; // cat@gamma, a listener
  let E; // eve@beta, a listener on the speaker's node
  let bin; // testnet, for the synthetic listeners

  before(async () => {
    assertPrivateNetns();
    dir = tempDir('cascade');
    const wav = writeBeepWav(path.join(dir, 'beeps.wav'), { seconds: 10, periodMs: 500, beepMs: 250 });
    const betaDir = tempDir('node');
    const gammaDir = tempDir('node');
    const [betaId, gammaId] = await Promise.all([nodeId(betaDir), nodeId(gammaDir)]);
    // Each node's crowd is CROWD sessions of one member, all in the call: above the per-user
    // defaults (8 sockets, 1 call seat).
    const args = ['--sockets-per-user', String(CROWD + 8), '--call-seats-per-user', String(CROWD + 8)];
    alpha = await startNode({ name: 'alpha', peers: [`/p2p/${betaId}`, `/p2p/${gammaId}`], args });
    beta = await startNode({ name: 'beta', dataDir: betaDir, peers: [alpha.p2p, `/p2p/${gammaId}`], args });
    gamma = await startNode({ name: 'gamma', dataDir: gammaDir, peers: [alpha.p2p, beta.p2p], args });
    bin = testnetBin();
    [B, D, C, E] = await Promise.all([launchBrowser(wav), launchBrowser(wav), launchBrowser(wav), launchBrowser(wav)]);
  });

  after(async () => {
    for (const [who, b] of [['B', B], ['D', D], ['C', C], ['E', E]]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
    }
    for (const b of [B, D, C, E]) if (b) await b.close();
    for (const n of [alpha, beta, gamma]) if (n) await n.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('bob on beta is heard on alpha and gamma through the audio servers only; gamma dies and alpha hears on', async () => {
    await Promise.all([
      registerOn(B.page, beta.url, 'bob', PASSWORD),
      registerOn(D.page, alpha.url, 'dan', PASSWORD),
      registerOn(C.page, gamma.url, 'cat', PASSWORD),
      registerOn(E.page, beta.url, 'eve', PASSWORD),
    ]);
    const alice = new Http(alpha.url);
    assert.equal((await alice.call('POST', '/api/register', { username: 'alice', password: PASSWORD })).status, 201);
    const gid = (await alice.call('POST', '/api/groups', { name: 'Lectures' })).body.id;
    const room = await alice.call('POST', `/api/groups/${gid}/rooms`, { name: 'Hall', stage: true });
    assert.equal(room.status, 201, JSON.stringify(room.body));
    const rid = room.body.id;
    // Until the nodes have exchanged cards, adding their users is refused: try again.
    // One member per node whose sessions are the synthetic crowd there.
    const crowdOf = { alpha: new Http(alpha.url), beta: new Http(beta.url), gamma: new Http(gamma.url) };
    for (const [node, h] of Object.entries(crowdOf)) {
      assert.equal((await h.call('POST', '/api/register', { username: `crowd${node[0]}`, password: PASSWORD })).status, 201);
    }
    for (const user of ['dan', 'bob@beta', 'cat@gamma', 'eve@beta', 'crowda', 'crowdb@beta', 'crowdg@gamma']) {
      await waitFor(async () => (await alice.call('POST', `/api/groups/${gid}/members`, { user })).status === 201, { timeout: 30_000, message: `adding ${user}` });
    }
    // bob moderates: he is on stage as he joins.
    assert.equal((await alice.call('PATCH', `/api/groups/${gid}/members/bob@beta`, { role: 'admin' })).status, 200);
    for (const page of [B.page, C.page, E.page]) {
      await waitFor(async () => (await pageApi(page, 'POST', `/api/invitations/${gid}/accept`)).status === 200, { timeout: 30_000, message: 'accepting the invitation' });
    }
    for (const h of [crowdOf.beta, crowdOf.gamma]) {
      await waitFor(async () => (await h.call('POST', `/api/invitations/${gid}/accept`)).status === 200, { timeout: 30_000, message: 'a crowd accepting the invitation' });
    }
    const roomUrl = (node) => new URL(`/g/${gid}/r/${rid}`, node.url).href;
    // bob's role crossed to beta before he joins (else beta seats him in the audience).
    await waitFor(async () => {
      const g = await pageApi(B.page, 'GET', `/api/groups/${gid}`);
      return (g.body.members || []).some((m) => m.user === 'bob@beta' && m.role === 'admin');
    }, { timeout: 30_000, message: "beta to know bob's role" });

    for (const [page, node] of [[B.page, beta], [D.page, alpha], [C.page, gamma], [E.page, beta]]) {
      await page.goto(roomUrl(node));
      await byId(page, 'call-join').click();
      await byId(page, 'call-leave').waitFor();
    }
    await waitFor(async () => (await byId(B.page, 'stage-role').getAttribute('data-place')) === 'speaker', { message: 'bob on stage' });

    // dan and cat hear bob, through their own node's audio server only.
    for (const [who, page] of [['dan@alpha', D.page], ['cat@gamma', C.page]]) {
      await waitFor(async () => (await sfuStats(page)).audioLevel > 0, { timeout: 45_000, interval: 100, message: `${who} hearing bob@beta` });
      const peers = await page.evaluate(() => [...window.__voicechat.peers().keys()]);
      assert.deepEqual(peers, ['sfu'], `${who} has connections other than to its node: ${peers}`);
      await waitFor(async () => /People of other nodes come through their own node too, which cannot hear it either\./.test(await byId(page, 'call-transport').textContent()), { message: `${who}'s page saying how bob's audio comes` });
    }
    const firstHeard = Date.now();
    // The frames crossed both audio servers encrypted, and decrypt with bob's key.
    for (const [who, page] of [['dan@alpha', D.page], ['cat@gamma', C.page]]) {
      const e2ee = await waitFor(async () => {
        const s = await page.evaluate(() => window.__voicechat.e2ee());
        return s.on && s.stats && s.stats.decrypted > 0 ? s : null;
      }, { message: `${who} decrypting bob's frames` });
      assert.equal(e2ee.stats.plaintext || 0, 0, `${who} got plaintext frames: ${JSON.stringify(e2ee)}`);
    }

    // Their pages say who they hear: beta names the slots of its links, so the slot carrying
    // bob's audio says bob@beta, and bob's place on stage shows him speaking (the level of
    // the slot named after him), under his name.
    for (const [who, page] of [['dan@alpha', D.page], ['cat@gamma', C.page]]) {
      await waitFor(async () => (await page.evaluate(() => window.__voicechat.sfu().slots)).includes('bob@beta'), { timeout: 30_000, message: `${who}'s page naming bob@beta on a slot` });
      const bob = byId(page, 'stage-speakers').locator('[data-testid="participant-bob@beta"]');
      await waitFor(async () => (await bob.getAttribute('data-speaking')) === 'true', { timeout: 30_000, interval: 50, message: `${who}'s page showing bob speaking` });
      assert.match(await bob.locator('[data-testid="participant-name-bob@beta"]').innerText(), /\bbob\b/, `${who}'s page shows bob's name`);
    }

    // Synthetic listeners on all three nodes, CROWD each, hear bob too; meanwhile alpha and
    // gamma each receive exactly one copy of his stream (their per-speaker copy metric), and
    // beta, his own node, pulls none.
    const copies = async (node) => {
      const text = await (await fetch(new URL('/metrics', node.url))).text();
      return Object.fromEntries([...text.matchAll(/^voicechat_sfu_cascade_copies\{speaker="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
    };
    const crowdArgs = (node, user) => ['--url', node.url.replace(/\/$/, ''), '--user', user, '--password', PASSWORD, '--group', gid, '--room', rid, '--listeners', String(CROWD), '--secs', '6'];
    const crowds = Promise.all([[alpha, 'crowda'], [beta, 'crowdb'], [gamma, 'crowdg']].map(([node, user]) => crowd(bin, crowdArgs(node, user), 90_000)));
    await sleep(4000);
    const seen = { alpha: await copies(alpha), beta: await copies(beta), gamma: await copies(gamma) };
    const heard = await crowds;
    for (const [i, node] of ['alpha', 'beta', 'gamma'].entries()) {
      const c = heard[i];
      assert.equal(c.connected, CROWD, `${node}'s synthetic listeners connected: ${JSON.stringify(c.each.filter((e) => !e.connected))}`);
      const deaf = c.each.filter((e) => e.received < 100);
      assert.deepEqual(deaf, [], `${node}'s synthetic listeners that heard under 100 packets of bob in 6 s`);
    }
    assert.deepEqual(seen, { alpha: { 'bob@beta': 1 }, beta: {}, gamma: { 'bob@beta': 1 } }, 'incoming copies of each speaker, per node');
    console.log(`synthetic listeners (${CROWD} per node) received ${heard.map((c) => c.received).join(' / ')} packets on alpha / beta / gamma; copies of bob@beta: alpha ${seen.alpha['bob@beta']}, gamma ${seen.gamma['bob@beta']}`);

    // Mouth-to-ear, Chromium to Chromium: bob to eve on beta alone, bob to dan across the
    // cascade (beta's audio server, then alpha's), the same beeps in the same run, once the
    // call has settled: a receiver's jitter buffer starts deep after the set-up's bursts
    // (dan's at about 130 ms) and drains over some 10 s (to within 10 ms of eve's).
    await sleep(Math.max(0, firstHeard + 15_000 - Date.now()));
    await waitFor(async () => (await sfuStats(E.page)).audioLevel > 0, { timeout: 45_000, interval: 100, message: 'eve@beta hearing bob@beta' });
    await watchOnsets(B.page, 'sent', () => [window.__voicechat.localStream()]);
    // Every audio element of the call: the slots of the node's audio server.
    const slots = () => [...document.querySelectorAll('.speakers audio')].map((el) => el.srcObject).filter(Boolean);
    for (const page of [D.page, E.page]) assert.ok((await watchOnsets(page, 'heard', slots)) > 0, 'no audio element to listen to');
    await sleep(8000);
    const sent = await B.page.evaluate(() => window.__onsets.sent);
    const oneNode = latencies(sent, await E.page.evaluate(() => window.__onsets.heard));
    const cascade = latencies(sent, await D.page.evaluate(() => window.__onsets.heard));
    console.log(`mouth-to-ear (ms, Chromium to Chromium, ${sent.length} beeps): one node (bob→eve, beta) p50 ${median(oneNode)} [${oneNode.map((x) => x.toFixed(0)).join(' ')}]; across the cascade (bob→dan, beta→alpha) p50 ${median(cascade)} [${cascade.map((x) => x.toFixed(0)).join(' ')}]`);
    assert.ok(cascade.length > 0 && oneNode.length > 0, 'no beep was timed at a listener');

    // cat, a listener on gamma, is made a moderator: her page offers to invite dan, a listener
    // on alpha (his place crossed in his signed presence). The invitation goes through alpha,
    // the group's home, which decides; dan says yes on his page, and everyone hears him: a
    // second stream with audio at bob (beta), cat (gamma) and eve (beta).
    const before = await Promise.all([C.page, E.page].map((page) => soundingTracks(page)));
    assert.deepEqual(before, [1, 1], 'cat and eve hear bob alone before dan is invited');
    assert.equal((await alice.call('PATCH', `/api/groups/${gid}/members/cat@gamma`, { role: 'admin' })).status, 200);
    const invite = byId(C.page, 'moderate-invite-dan@alpha');
    await invite.waitFor({ timeout: 30_000 });
    // What cat sees: people of other nodes in the audience, in their places.
    fs.mkdirSync(path.join(REPO, 'target', 'screenshots'), { recursive: true });
    for (const width of [1280, 360]) {
      await C.page.setViewportSize({ width, height: 800 });
      await C.page.screenshot({ path: path.join(REPO, 'target', 'screenshots', `cascade-moderator-${width}.png`), fullPage: true });
    }
    await C.page.setViewportSize({ width: 1280, height: 800 });
    await invite.click();
    await byId(D.page, 'stage-invitation').waitFor({ timeout: 30_000 });
    assert.match(await byId(D.page, 'stage-invitation-text').textContent(), /^cat · gamma invites you to speak/);
    await byId(D.page, 'stage-accept').click();
    await waitFor(async () => (await byId(D.page, 'stage-role').getAttribute('data-place')) === 'speaker', { message: 'dan on stage' });
    // cat's page moves dan to the speakers (his node signed his new place).
    await byId(C.page, 'moderate-audience-dan@alpha').waitFor({ timeout: 30_000 });
    await waitFor(async () => (await sfuStats(B.page)).totalAudioEnergy > 0, { timeout: 30_000, interval: 200, message: 'bob@beta hearing dan@alpha' });
    for (const [who, page] of [['cat@gamma', C.page], ['eve@beta', E.page]]) {
      await waitFor(async () => (await soundingTracks(page)) >= 2, { timeout: 30_000, interval: 200, message: `${who} hearing dan@alpha as well as bob@beta` });
    }

    // Alpha pulls from both other nodes (gamma's listener's presence has reached it).
    await waitFor(async () => {
      const text = await (await fetch(new URL('/metrics', alpha.url))).text();
      const m = text.match(/^voicechat_sfu_cascade_links\{dir="in"\} (\d+)/m);
      return m && Number(m[1]) === 2;
    }, { timeout: 30_000, message: 'alpha pulling from beta and gamma' });

    // Gamma dies mid-lecture: dan's packets from bob keep coming, no gap over a second.
    await D.page.evaluate(() => {
      window.__notices = [];
      const el = document.getElementById('notice');
      new MutationObserver(() => window.__notices.push(el.textContent)).observe(el, { childList: true, subtree: true });
    });
    gamma.proc.kill('SIGKILL');
    const samples = [];
    const until = Date.now() + 4000;
    while (Date.now() < until) {
      samples.push([Date.now(), (await sfuStats(D.page)).packetsReceived]);
      await sleep(100);
    }
    let last = samples[0];
    let gap = 0;
    for (const s of samples) {
      if (s[1] > last[1]) {
        gap = Math.max(gap, s[0] - last[0]);
        last = s;
      }
    }
    gap = Math.max(gap, samples[samples.length - 1][0] - last[0]);
    console.log(`longest gap in dan's packets after gamma died: ${gap} ms`);
    assert.ok(gap <= 1000, `dan heard nothing for ${gap} ms after gamma died`);
    assert.ok((await sfuStats(D.page)).audioLevel > 0 || (await sfuStats(D.page)).totalAudioEnergy > 0, 'dan still hears bob');
    // dan's page says gamma dropped out.
    await waitFor(async () => (await D.page.evaluate(() => window.__voicechat.sfu().unreachable)).includes('gamma'), { timeout: 30_000, message: "dan's call to know gamma is unreachable" });
    const notices = await D.page.evaluate(() => window.__notices);
    assert.ok(notices.some((t) => /gamma unreachable/.test(t)), `dan was not told: ${JSON.stringify(notices)}`);
  });
});

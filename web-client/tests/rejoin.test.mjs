//! Calls that survive the page: (a) the room page opens the microphone and fetches what the
//! call needs before Join, and says so; leaving the page without joining releases it;
//! (b) A reloads the page in a call: it is back in the call by itself, and both hear each
//! other again; (c) the room's URL typed in the same tab does the same; (d) after Leave, a
//! reload stays out. Run through tests/run.sh (private netns).

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { nodeAndBrowsers, waitFor, audioStats, setUpRoom, joinCall } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Live microphone tracks the page opened (getUserMedia is wrapped before the app loads). */
function watchTracks(context) {
  return context.addInitScript(() => {
    window.__tracks = [];
    const md = navigator.mediaDevices;
    const real = md.getUserMedia.bind(md);
    md.getUserMedia = async (c) => {
      const s = await real(c);
      window.__tracks.push(...s.getAudioTracks());
      return s;
    };
  });
}
const liveTracks = (page) => page.evaluate(() => window.__tracks.filter((t) => t.readyState === 'live').length);

/** `page` hears the other: inbound packets and energy rise, audioLevel above 0. */
async function hears(page, name) {
  const first = await audioStats(page);
  await waitFor(async () => {
    const s = await audioStats(page);
    return s.packetsReceived > first.packetsReceived + 50 && s.totalAudioEnergy > first.totalAudioEnergy && s.audioLevel > 0.001;
  }, { timeout: 30_000, interval: 200, message: `${name} to hear the other` });
}

describe('calls that survive the page', { timeout: 180_000 }, () => {
  const t = nodeAndBrowsers('rejoin', { wav: { periodMs: 500, beepMs: 250 } });
  let node;
  let A;
  let B;
  let roomUrl;

  before(async () => {
    ({ node } = t);
    [A, B] = t.browsers;
    for (const b of [A, B]) await watchTracks(b.context);
    ({ roomUrl } = await setUpRoom(node.url, [A, B], ['ada', 'bob']));
  });

  it('(a) the room page makes the call ready before Join, says so, and lets go when left', async () => {
    await A.page.goto(roomUrl);
    await byId(A.page, 'mic-ready').waitFor();
    assert.match(await byId(A.page, 'mic-ready').textContent(), /microphone is on.*nothing is sent until you join/i);
    assert.equal(await liveTracks(A.page), 1, 'one microphone opened on the room page');
    await byId(A.page, 'room-group-link').click();
    await byId(A.page, 'group-title').waitFor();
    await waitFor(async () => (await liveTracks(A.page)) === 0, { message: 'the microphone released when the room page closed' });
    await byId(A.page, `room-link-Hall`).click();
    await byId(A.page, 'mic-ready').waitFor();
    await joinCall(A.page, roomUrl);
    assert.equal(await liveTracks(A.page), 1, 'Join used the microphone already open');
    await joinCall(B.page, roomUrl);
    await hears(A.page, 'ada');
    await hears(B.page, 'bob');
  });

  it('(b) a reload brings ada back into the call by herself', async () => {
    await A.page.reload();
    await byId(A.page, 'call-leave').waitFor({ timeout: 20_000 });
    assert.equal(await A.page.evaluate(() => window.__voicechat.callStatus()) !== 'idle', true);
    await hears(A.page, 'ada after the reload');
    await hears(B.page, 'bob after ada reloaded');
  });

  it("(c) the room's URL, typed in the same tab, also rejoins", async () => {
    await A.page.goto(new URL('/', node.url).href);
    await byId(A.page, 'group-list').waitFor();
    await A.page.goto(roomUrl);
    await byId(A.page, 'call-leave').waitFor({ timeout: 20_000 });
    await hears(B.page, 'bob after ada came back by URL');
  });

  it('(d) after Leave, a reload stays out of the call', async () => {
    await byId(A.page, 'call-leave').click();
    await byId(A.page, 'call-join').waitFor();
    await A.page.reload();
    await byId(A.page, 'call-join').waitFor();
    await byId(A.page, 'mic-ready').waitFor();
    assert.equal(await A.page.evaluate(() => window.__voicechat.callStatus()), 'idle');
  });
});

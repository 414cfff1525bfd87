//! The room view on a phone and a desktop: (a) on a phone (360 px, touch, no hover) the
//! people in the call come right after the call's buttons, before the microphone settings,
//! and push-to-talk ("hold Space") is not offered without a keyboard; (b) on a desktop it is,
//! and the own level meter has a visible label. Screenshots in target/screenshots.
//! Run through tests/run.sh (private netns).

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, nodeAndBrowsers, waitFor, setUpRoom, joinCall, sleep } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const top = (page, id) => page.evaluate((i) => document.querySelector(`[data-testid="${i}"]`).getBoundingClientRect().top, id);

describe('the room view on a phone and a desktop', { timeout: 120_000 }, () => {
  // A desktop and a phone.
  const t = nodeAndBrowsers('roomview', { browsers: [{}, { viewport: { width: 360, height: 740 }, device: { isMobile: true, hasTouch: true } }] });
  let A; // desktop
  let P; // phone
  let roomUrl;
  const out = path.join(REPO, 'target', 'screenshots');

  before(async () => {
    fs.mkdirSync(out, { recursive: true });
    [A, P] = t.browsers;
    ({ roomUrl } = await setUpRoom(t.node.url, [A, P], ['ada', 'pat']));
    for (const b of [A, P]) await joinCall(b.page, roomUrl);
    for (const [b, other] of [[A, 'pat@alpha'], [P, 'ada@alpha']]) {
      await waitFor(async () => (await byId(b.page, `peer-state-${other}`).getAttribute('data-state')) === 'connected', { message: `connected to ${other}` });
    }
  });

  it('(a) on a phone: people right after the buttons, no push-to-talk without a keyboard', async () => {
    const page = P.page;
    assert.equal(await page.evaluate(() => matchMedia('(pointer: coarse)').matches), true, 'the phone has a coarse pointer');
    assert.equal(await byId(page, 'ptt-toggle').count(), 0, 'push-to-talk offered on a touch screen');
    const leave = await top(page, 'call-leave');
    const people = await top(page, 'participant-ada@alpha');
    const settings = await top(page, 'call-settings');
    assert.ok(leave < people && people < settings, `buttons ${leave}, people ${people}, settings ${settings}`);
    assert.ok(people < 740, `the first person is below the fold (${people} px)`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the room view is ${overflow}px wider than the phone`);
    await sleep(300);
    await page.screenshot({ path: path.join(out, 'room-phone-360.png') });
  });

  it('(b) on a desktop: push-to-talk offered; the own level meter is labelled; per-person mute', async () => {
    const page = A.page;
    // Muting pat for ada only: pat's audio element is muted on her page, and back.
    const patMuted = () => page.evaluate(() => [...document.querySelectorAll('.speakers audio')].filter((a) => a.srcObject).map((a) => a.muted));
    assert.deepEqual(await patMuted(), [false]);
    await byId(page, 'person-mute-pat@alpha').click();
    assert.deepEqual(await patMuted(), [true], "pat's audio plays on ada's page after she muted him");
    assert.equal(await byId(page, 'person-mute-pat@alpha').getAttribute('aria-pressed'), 'true');
    assert.deepEqual(await P.page.evaluate(() => [...document.querySelectorAll('.speakers audio')].map((a) => a.muted)), [false], 'pat still hears ada');
    await byId(page, 'person-mute-pat@alpha').click();
    assert.deepEqual(await patMuted(), [false]);
    await byId(page, 'ptt-toggle').waitFor();
    const meter = byId(page, 'local-meter');
    assert.equal((await meter.locator('.meter-label').textContent()).trim(), 'Your level');
    const labelled = await meter.locator('[role="meter"]').evaluate((m) => document.getElementById(m.getAttribute('aria-labelledby'))?.textContent);
    assert.equal(labelled, 'Your level', 'the meter is named by its label');
    await sleep(300);
    await page.screenshot({ path: path.join(out, 'room-desktop-1280.png') });
  });
});

//! The group page as a new user meets it: (a) each room has a Join button that joins its call
//! and opens the room (no guessing that the name is a link), and the row then offers to open
//! the call instead; (b) the owner's view is not a wall of red buttons: deleting a room or
//! removing a member sits in a "⋯" menu and still asks first, and each member's role shows
//! once; (c) an invite link is shown whole, also at 360 px, with Copy (and Share where the
//! browser can share); screenshots at 1280 and 360 px. Run through tests/run.sh.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, nodeAndBrowsers, waitFor, setUpRoom, sleep } from './helpers.mjs';

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

describe('the group page', { timeout: 120_000 }, () => {
  const t = nodeAndBrowsers('group');
  let node;
  let A;
  let B;
  let groupUrl;

  before(async () => {
    ({ node } = t);
    [A, B] = t.browsers;
    await setUpRoom(node.url, [A, B], ['ada', 'bob']);
    await byId(A.page, 'room-group-link').click();
    await byId(A.page, 'group-title').waitFor();
    groupUrl = A.page.url();
  });

  it('(a) Join on the group page joins the call and opens the room; the row then says so', async () => {
    await B.page.goto(groupUrl);
    const join = byId(B.page, 'room-join-Hall');
    assert.equal((await join.textContent()).trim(), 'Start call', 'an empty room starts a call');
    await join.click();
    await byId(B.page, 'call-leave').waitFor();
    assert.match(new URL(B.page.url()).pathname, /^\/g\/[^/]+\/r\/[^/]+$/);
    // ada sees bob in the call live on her group page, and a Join (not Start) button.
    await waitFor(async () => /1 in call: bob/.test(await byId(A.page, 'room-count-Hall').textContent()), { message: "ada's group page to show bob in the call" });
    assert.equal((await byId(A.page, 'room-join-Hall').textContent()).trim(), 'Join');
    // Back to the group page inside the app (a reload would leave the call).
    await byId(B.page, 'room-group-link').click();
    await byId(B.page, 'room-open-Hall').waitFor();
    // Away from the room page the header strip carries the call (there only: not twice).
    await byId(B.page, 'callbar-room').waitFor();
    await byId(B.page, 'callbar-room').click();
    await byId(B.page, 'call-leave').waitFor();
    assert.equal(await byId(B.page, 'callbar-room').count(), 0, 'the header strip on the call\'s own page');
    assert.equal(await byId(B.page, 'room-join-Hall').count(), 0, 'a Join button for the call you are in');
  });

  it("(b) the owner's destructive actions are in a menu and ask first; roles show once", async () => {
    await A.page.goto(groupUrl);
    await byId(A.page, 'member-bob@alpha').waitFor();
    const red = await A.page.locator('.list .btn-danger').evaluateAll((els) => els.filter((e) => e.checkVisibility()).length);
    assert.equal(red, 0, `${red} red buttons in plain sight on the owner's lists`);
    // Roles: bob's is the owner's choice, not also a badge; ada's own is a badge only.
    const bob = byId(A.page, 'member-bob@alpha');
    assert.equal(await bob.locator('select').count(), 1);
    assert.equal(await bob.locator('.badge[class*="role-"]').count(), 0, "bob's role shown twice");
    assert.equal(await byId(A.page, 'member-ada@alpha').locator('.badge.role-owner').count(), 1);
    // The menu: it opens, it asks, and saying no changes nothing.
    await byId(A.page, 'room-menu-Hall').locator('summary').click();
    const del = byId(A.page, 'room-delete-Hall');
    await del.waitFor();
    let asked = '';
    A.page.once('dialog', (d) => {
      asked = d.message();
      d.dismiss();
    });
    await del.click();
    await waitFor(() => asked, { message: 'a question before deleting' });
    assert.match(asked, /Delete the room “Hall”/);
    await sleep(300);
    assert.equal(await byId(A.page, 'room-link-Hall').count(), 1, 'the room is still there');
    await A.page.keyboard.press('Escape');
    await byId(A.page, 'member-menu-bob@alpha').locator('summary').click();
    await byId(A.page, 'member-remove-bob@alpha').waitFor();
  });

  it('(c) an invite link is shown whole, with Copy (and Share where there is one), at 1280 and 360 px', async () => {
    await A.page.goto(groupUrl);
    await byId(A.page, 'invite-create').click();
    const code = A.page.locator('[data-testid^="invite-url-"]').first();
    await code.waitFor();
    const url = (await code.textContent()).trim();
    assert.match(url, /^http:\/\/(127\.0\.0\.1|localhost):\d+\/invite\/[0-9a-f]+$/);
    const out = path.join(REPO, 'target', 'screenshots');
    fs.mkdirSync(out, { recursive: true });
    const canShare = await A.page.evaluate(() => typeof navigator.share === 'function');
    for (const [w, hgt] of [[1280, 800], [360, 740]]) {
      await A.page.setViewportSize({ width: w, height: hgt });
      await sleep(200);
      const fits = await code.evaluate((el) => el.scrollWidth <= el.clientWidth + 1 && el.getBoundingClientRect().right <= window.innerWidth);
      assert.ok(fits, `the invite link is cut at ${w} px`);
      const overflow = await A.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the group page is ${overflow}px wider than ${w}px`);
      await A.page.screenshot({ path: path.join(out, `group-owner-${w}.png`), fullPage: true });
    }
    await A.page.setViewportSize({ width: 1280, height: 800 });
    assert.equal(await A.page.locator('[data-testid^="invite-copy-"]').count(), 1);
    assert.equal(await A.page.locator('[data-testid^="invite-share-"]').count(), canShare ? 1 : 0, 'Share offered exactly where the browser can share');
    // On a phone the invite links come before the member list.
    const order = await A.page.evaluate(() => {
      const inv = document.querySelector('[data-testid="invite-list"]').getBoundingClientRect().top;
      const mem = document.querySelector('[data-testid="member-list"]').getBoundingClientRect().top;
      return inv < mem;
    });
    assert.ok(order, 'invite links below the member list');
  });
});

//! Room lists in the page, on a node whose rooms show a list up to one person
//! (`--room-list-max 1`): C, on the group's page and then the room's, sees the names while
//! the room is small and only the count once it is bigger, while A and B in the call keep
//! seeing each other; when the room shrinks C sees the names again, and a mute as it happens.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { nodeAndBrowsers, waitFor, registerOn } from './helpers.mjs';

const PASSWORD = 'room-lists-password';
const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
const text = async (page, id) => ((await byId(page, id).textContent()) || '').trim();

describe('room lists: names while small, a count past the threshold', { timeout: 180_000 }, () => {
  const t = nodeAndBrowsers('roomlists', { wav: { seconds: 4 }, node: { args: ['--room-list-max', '1'] }, browsers: [{}, {}, {}] });
  let node;
  let A;
  let B;
  let C;

  before(() => {
    ({ node } = t);
    [A, B, C] = t.browsers;
  });

  after(() => {
    for (const [who, b] of [['A', A], ['B', B], ['C', C]]) {
      const errors = b ? b.consoleLines.filter((l) => l.startsWith('[pageerror]')) : [];
      if (errors.length) console.log(`page errors in ${who}:\n${errors.join('\n')}`);
    }
  });

  it('shows names, then the count, then names again, live', async () => {
    for (const [b, name] of [[A, 'alice'], [B, 'bob'], [C, 'carol']]) await registerOn(b.page, node.url, name, PASSWORD);
    await byId(A.page, 'group-create-name').fill('Lecture');
    await byId(A.page, 'group-create-submit').click();
    await byId(A.page, 'group-title').waitFor();
    await byId(A.page, 'room-create-name').fill('Hall');
    await byId(A.page, 'room-create-submit').click();
    await byId(A.page, 'room-link-Hall').waitFor();
    for (const user of ['bob', 'carol']) {
      await byId(A.page, 'member-add-input').fill(user);
      await byId(A.page, 'member-add-submit').click();
      await byId(A.page, `member-${user}@alpha`).waitFor();
    }
    const groupUrl = A.page.url();
    await C.page.goto(groupUrl);
    await byId(C.page, 'room-count-Hall').waitFor();
    assert.equal(await text(C.page, 'room-count-Hall'), 'Nobody in call');

    // One in the call: C's group page lists her.
    await byId(A.page, 'room-link-Hall').click();
    const roomUrl = A.page.url();
    await byId(A.page, 'call-join').click();
    await byId(A.page, 'call-leave').waitFor();
    await waitFor(async () => (await text(C.page, 'room-count-Hall')) === '1 in call: alice', { message: 'C to see alice by name' });

    // Two: past the threshold, C gets the count only; A and B, in the call, see each other.
    await B.page.goto(roomUrl);
    await byId(B.page, 'call-join').click();
    await byId(B.page, 'call-leave').waitFor();
    for (const [page, other] of [[A.page, 'bob@alpha'], [B.page, 'alice@alpha']]) {
      await byId(page, `participant-${other}`).waitFor({ timeout: 20_000 });
    }
    await waitFor(async () => (await text(C.page, 'room-count-Hall')) === '2 in call', { message: 'C to see "2 in call", no names' });

    // On the room's page C sees the count and may join; no list.
    await byId(C.page, 'room-link-Hall').click();
    await waitFor(async () => (await text(C.page, 'room-summary')) === '2 people in the call', { message: 'C: the summary counts two' });
    assert.equal(await text(C.page, 'call-join'), 'Join');
    assert.match(await text(C.page, 'participant-list'), /too many to list/);
    assert.equal(await byId(C.page, 'participant-alice@alpha').count(), 0, 'no names past the threshold');

    // B leaves: one again, and C's page lists alice; her mute shows as it happens.
    await byId(B.page, 'call-leave').click();
    await byId(C.page, 'participant-alice@alpha').waitFor({ timeout: 20_000 });
    assert.equal(await text(C.page, 'room-summary'), '1 person in the call');
    await byId(A.page, 'call-mute').click();
    await waitFor(async () => (await byId(C.page, 'participant-alice@alpha').getAttribute('class')).includes('is-muted'), {
      message: "C to see alice's mute",
    });
    await byId(A.page, 'call-leave').click();
    await waitFor(async () => (await text(C.page, 'room-summary')) === 'Nobody is in the call yet', { message: 'C to see the call empty' });
  });
});

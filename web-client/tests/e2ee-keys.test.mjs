//! e2ee/keys.js's guard against a browser that does not engage the frame transforms (Chromium
//! skips a receiver's transform attached after the description that made it, and the decoder
//! then gets ciphertext): packets counted by getStats that the worker never saw turn
//! "end to end" off in the page. Runs in Node with stand-ins for the connections and the
//! worker's counts; no browser needed.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CallKeys } from '../e2ee/keys.js';

/** A CallKeys as in a call, whose connections and worker report the given counts. */
function keysWith(counts) {
  const changes = [];
  const pc = { getStats: async () => new Map([['o', { type: 'outbound-rtp', kind: 'audio', packetsSent: counts.sent }], ['i', { type: 'inbound-rtp', kind: 'audio', packetsReceived: counts.received }]]) };
  const keys = new CallKeys({ send: () => {}, changed: () => changes.push(keys.status()), sends: () => true, peerConnections: () => [pc] });
  keys.mode = 'script';
  keys.enabled = true;
  keys.transforms = {
    stats: async () => ({ encrypted: counts.encrypted, decrypted: counts.decrypted, failed: 0, plaintext: 0, dropped_no_key: 0 }),
  };
  return { keys, changes };
}

describe('the page checks that audio went through its encryption', () => {
  it('all packets through the worker: end to end stays on', async () => {
    const c = { sent: 0, received: 0, encrypted: 0, decrypted: 0 };
    const { keys } = keysWith(c);
    await keys.check();
    Object.assign(c, { sent: 150, received: 148, encrypted: 150, decrypted: 146 });
    await keys.check();
    assert.equal(keys.bypassed, null);
    assert.equal(keys.status().on, true);
  });

  it('packets received that the worker never decrypted: not end to end, and why', async () => {
    const c = { sent: 0, received: 0, encrypted: 0, decrypted: 0 };
    const { keys, changes } = keysWith(c);
    await keys.check();
    Object.assign(c, { sent: 150, received: 150, encrypted: 150, decrypted: 0 });
    await keys.check();
    assert.equal(keys.bypassed, 'recv');
    const s = keys.status();
    assert.equal(s.on, false);
    assert.match(s.why, /decryption never saw/);
    assert.equal(changes.at(-1).on, false, 'the page was told');
    // Once packets go through the worker again, it says so again.
    Object.assign(c, { sent: 300, received: 300, encrypted: 300, decrypted: 150 });
    await keys.check();
    assert.equal(keys.status().on, true);
  });

  it('packets sent that the worker never encrypted: not end to end', async () => {
    const c = { sent: 0, received: 0, encrypted: 0, decrypted: 0 };
    const { keys } = keysWith(c);
    await keys.check();
    Object.assign(c, { sent: 150, received: 0, encrypted: 3, decrypted: 0 });
    await keys.check();
    assert.equal(keys.bypassed, 'send');
    assert.match(keys.status().why, /encryption never saw/);
  });

  it('silence, and connections made anew, are no evidence', async () => {
    const c = { sent: 0, received: 0, encrypted: 0, decrypted: 0 };
    const { keys } = keysWith(c);
    await keys.check();
    Object.assign(c, { sent: 10, received: 10 });
    await keys.check();
    assert.equal(keys.bypassed, null, 'too few packets to judge');
    Object.assign(c, { sent: 5, received: 5 }); // a new connection: counts start over
    await keys.check();
    assert.equal(keys.bypassed, null);
  });
});

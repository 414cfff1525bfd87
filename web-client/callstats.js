//! What the call reads from getStats(): each person's speaking level (through the node's
//! audio server, the level of the slot carrying them) and the path each mesh connection
//! takes (direct or relayed), plus the per-connection summary of the test hook.

import { inboundLevel } from './audio.js';
import { selectedPath } from './mesh.js';

export const LEVEL_POLL_MS = 200;
export const PATH_POLL_MS = 2000;

/**
 * The levels now (0..1): `local` → `localLevel`, each remote session → its inbound
 * audioLevel, from its mesh connection or the audio server's slot carrying it.
 */
export async function readLevels(mesh, sfu, localLevel) {
  const levels = new Map([['local', localLevel]]);
  await Promise.all([
    ...[...mesh.peers.values()].map(async (peer) => {
      levels.set(peer.session, await inboundLevel(peer.pc));
    }),
    (async () => {
      if (!sfu) return;
      const slotLevels = await sfu.slotLevels();
      sfu.slots.forEach((who, i) => {
        if (who) levels.set(who.session, Math.max(levels.get(who.session) || 0, slotLevels[i]));
      });
    })(),
  ]);
  return levels;
}

/** Updates `paths` (session → selectedPath()) for every connected mesh peer; true if any changed. */
export async function readPaths(mesh, paths) {
  const peers = [...mesh.peers.values()];
  const found = await Promise.all(peers.map((p) => (p.state === 'connected' ? selectedPath(p.pc) : null)));
  let changed = false;
  peers.forEach((peer, i) => {
    const info = found[i];
    const old = paths.get(peer.session);
    if (JSON.stringify(old || null) === JSON.stringify(info)) return;
    changed = true;
    if (info) paths.set(peer.session, info);
    else paths.delete(peer.session);
  });
  return changed;
}

/** Per mesh connection: who, its state, whether it is unreachable, and its path. */
export function describeConnections(mesh, paths) {
  const out = [];
  if (!mesh) return out;
  for (const p of mesh.peers.values()) {
    const path = paths.get(p.session) || {};
    out.push({
      user: p.user,
      session: p.session,
      state: p.state,
      iceState: p.pc.iceConnectionState,
      unreachable: p.unreachable,
      restarts: p.restartCount,
      path: path.path || null,
      localCandidateType: path.localCandidateType || null,
      remoteCandidateType: path.remoteCandidateType || null,
      protocol: path.protocol || null,
    });
  }
  return out;
}

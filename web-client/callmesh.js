//! The mesh side of a call: one Mesh (mesh.js) per session of this tab, wired to the
//! call's speakers, states, paths and notices, and whether someone can be reached.

import { Mesh } from './mesh.js';

/** A new Mesh for `call`'s session, sending its open microphone. */
export function createMesh(call) {
  return new Mesh({
    mySession: call.mySession,
    isFormer: (session) => call.formerSessions.has(session),
    iceServers: call.iceServers,
    localStream: call.voice.sendStream,
    hooks: {
      send: (msg) => call.socket.send(msg),
      onTrack: (peer, stream) => call.speakers.attach(peer.session, peer.user, stream),
      onState: (peer, state) => {
        call.peerStates.set(peer.session, { user: peer.user, state, unreachable: peer.unreachable });
        if (state !== 'connected') call.paths.delete(peer.session);
        call.changed('peers');
      },
      onUnreachable: (peer) => {
        if (!reachedElsewhere(call.mesh, peer)) call.notify(call.unreachableText(peer.user));
      },
      // ICE lost its path: is the socket still fine? (a dead one is replaced, see networkChanged)
      onTrouble: () => call.socket.probe(),
      beforeRestart: () => call.refreshIce(),
      pcConfig: () => call.keys.pcConfig({ mesh: true }),
      attachSender: (sender) => call.keys.attachSender(sender),
      attachReceiver: (receiver) => call.keys.attachReceiver(receiver),
      onRemoteDescription: (peer, sdp) => call.keys.meshFingerprint(peer.session, sdp),
      onClose: (peer) => {
        call.speakers.detach(peer.session);
        call.peerStates.delete(peer.session);
        call.paths.delete(peer.session);
        call.levels.delete(peer.session);
        call.changed('peers');
      },
    },
  });
}

/**
 * Whether another session of the same user is connected: after a network change a user's
 * old session lingers on the node until it times out while the new one works; the old
 * one's failure is no news then.
 */
export function reachedElsewhere(mesh, peer) {
  if (!mesh) return false;
  return [...mesh.peers.values()].some((p) => p !== peer && p.user === peer.user && p.state === 'connected');
}

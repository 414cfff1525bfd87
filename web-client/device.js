//! The call on the device, outside the page: the Media Session (the call shows in a phone's
//! notification area and lock screen, with mute and hang-up buttons where the platform has
//! them) and a screen Wake Lock while in a call (re-taken when the page is shown again, as
//! the browser drops it when it is hidden). Both are optional: a browser without them, or
//! one that refuses the lock, leaves the call as it is, and the test hook says why.

/**
 * Follows `call` and names its room with `names(group, room)` → `{room, group}`.
 * @param {import('./call.js').Call} call
 * @param {(group: string, room: string) => {room: string, group: string}} names
 */
export function watchCallOnDevice(call, names) {
  const device = {
    /** 'held' | 'released' | 'unsupported' | 'refused: …' | null (never asked). */
    wakeLock: null,
    lock: null,
    inCall: false,
  };
  const session = typeof navigator !== 'undefined' ? navigator.mediaSession : undefined;

  async function takeLock() {
    if (!('wakeLock' in navigator)) {
      device.wakeLock = 'unsupported';
      return;
    }
    if (device.lock || document.visibilityState !== 'visible') return;
    try {
      const lock = await navigator.wakeLock.request('screen');
      if (!device.inCall) {
        lock.release();
        return;
      }
      device.lock = lock;
      device.wakeLock = 'held';
      lock.addEventListener('release', () => {
        if (device.lock === lock) {
          device.lock = null;
          device.wakeLock = 'released';
        }
      });
    } catch (err) {
      device.wakeLock = `refused: ${(err && err.name) || err}`;
    }
  }

  function dropLock() {
    const lock = device.lock;
    device.lock = null;
    if (lock) lock.release().catch(() => {});
    if (device.wakeLock === 'held') device.wakeLock = 'released';
  }

  function setHandler(action, fn) {
    try {
      session.setActionHandler(action, fn);
    } catch {
      /* an action this browser does not know */
    }
  }

  function update() {
    const inCall = call.status !== 'idle';
    if (inCall && !device.inCall) {
      device.inCall = true;
      takeLock();
      if (session) {
        setHandler('togglemicrophone', () => call.setMuted(!call.muted));
        setHandler('hangup', () => call.leave());
      }
    } else if (!inCall && device.inCall) {
      device.inCall = false;
      dropLock();
      if (session) {
        session.metadata = null;
        setHandler('togglemicrophone', null);
        setHandler('hangup', null);
      }
    }
    if (!inCall || !session) return;
    const { room, group } = names(call.group, call.room);
    const title = room || 'Call';
    if (!session.metadata || session.metadata.title !== title || session.metadata.artist !== group) {
      session.metadata = new MediaMetadata({ title, artist: group || '', album: 'VoiceChat', artwork: [{ src: '/icons/icon-512.png', sizes: '512x512', type: 'image/png' }] });
    }
    if (session.setMicrophoneActive) {
      try {
        // A promise in some browsers, nothing in others.
        Promise.resolve(session.setMicrophoneActive(!call.effectiveMuted)).catch(() => {});
      } catch {
        /* not for this page (e.g. not focused) */
      }
    }
  }

  call.subscribe(update);
  document.addEventListener('visibilitychange', () => {
    if (device.inCall && document.visibilityState === 'visible') takeLock();
  });

  return {
    update,
    /** For the test hook: `{inCall, wakeLock, title, artist}`. */
    state: () => ({
      inCall: device.inCall,
      wakeLock: device.wakeLock,
      title: session && session.metadata ? session.metadata.title : null,
      artist: session && session.metadata ? session.metadata.artist : null,
    }),
  };
}

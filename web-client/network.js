//! Network changes the page can see: a new address, back online (`navigator.connection`'s
//! `change` where it exists, and `online`). They come in bursts (offline, online, a
//! connection change), so the call hears of a burst once, after it settles.

/** How long a burst of network events is allowed to settle. */
const SETTLE_MS = 1000;

/** Call `onChange(why)` once per burst of network events. */
export function watchNetwork(onChange) {
  let timer = null;
  const changed = (why) => {
    clearTimeout(timer);
    timer = setTimeout(() => onChange(why), SETTLE_MS);
  };
  window.addEventListener('online', () => changed('online'));
  const conn = /** @type {any} */ (navigator).connection; // Network Information API: not everywhere
  if (conn && conn.addEventListener) conn.addEventListener('change', () => changed('connection change'));
}

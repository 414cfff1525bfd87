//! The app: session, shared state fed by the API and the socket, routing between views,
//! the notice (aria-live) area, the header, and the test/diagnostics hook.

import { api, ApiError } from './api.js';
import { Socket } from './socket.js';
import { Call } from './call.js';
import { h, link, replaceChildren, displayUser, userLabel, learnName } from './dom.js';
import * as adminView from './views/admin.js';
import * as authView from './views/auth.js';
import * as groupsView from './views/groups.js';
import * as groupView from './views/group.js';
import * as roomView from './views/room.js';
import * as inviteView from './views/invite.js';
import * as notFoundView from './views/notfound.js';
import { mountCallbar } from './views/callbar.js';
import { watchCallOnDevice } from './device.js';

/**
 * Everything the views read. Mutated only here (and by views through ctx helpers).
 * @type {{
 *   user: {id: string, name: string, node: string, admin: boolean, display_name?: string | null} | null,
 *   node: string,
 *   groups: Map<string, import('./protocol.js').GroupSummary & Partial<import('./protocol.js').GroupDetail>>,
 *   participants: Map<string, {version: number, list: import('./protocol.js').Participant[] | null, count: number}>,
 *   groupsLoaded: boolean,
 *   invitations: import('./protocol.js').InvitationView[],
 *   invitationsLoaded: boolean,
 *   blocks: string[],
 *   blocksLoaded: boolean,
 *   signIn: {providers: {id: string, name: string}[], registration: string, passwordLogin: boolean},
 * }}
 */
const state = {
  user: null, // User or null
  node: '',
  groups: new Map(), // id → GroupSummary, or GroupDetail once loaded (has .members)
  // "gid/rid" → {version, list: [Participant] or null (a big room: count only), count}
  participants: new Map(),
  groupsLoaded: false,
  invitations: [], // [Invitation] (api.js), newest first: groups of other nodes waiting for an answer
  invitationsLoaded: false,
  blocks: [], // node names whose invitations this user refuses
  blocksLoaded: false,
  // How people sign in here, from /api/session: identity providers [{id, name}], who may
  // sign up ("open" | "invite-only" | "closed"), and whether passwords are accepted.
  signIn: { providers: [], registration: 'open', passwordLogin: true },
};

function learnSignIn(s) {
  state.signIn = { providers: s.providers || [], registration: s.registration || 'open', passwordLogin: s.password_login !== false };
}

let route = { view: null, instance: null, params: {} };
const listeners = new Set(); // long-lived (header, call bar)
function emit(kind, data = {}) {
  const current = route.instance && route.instance.update ? [(k, d) => route.instance.update(k, d)] : [];
  for (const fn of [...listeners, ...current]) {
    try {
      fn(kind, data);
    } catch (err) {
      console.error('view update failed', err);
    }
  }
}

// ---------- notices ----------

const noticeEl = document.getElementById('notice');
let noticeTimer = null;
export function notify(message, kind = 'error') {
  clearTimeout(noticeTimer);
  noticeEl.hidden = false;
  noticeEl.className = `notice notice-${kind}`;
  replaceChildren(
    noticeEl,
    h('span', { class: 'notice-text' }, message),
    h('button', { class: 'btn btn-quiet', type: 'button', 'aria-label': 'Dismiss', onclick: clearNotice }, '×'),
  );
  noticeTimer = setTimeout(clearNotice, kind === 'error' ? 12_000 : 5_000);
}
function clearNotice() {
  noticeEl.hidden = true;
  noticeEl.textContent = '';
}
/** An error said earlier no longer applies (the thing it was about just worked): gone. */
function clearError() {
  if (!noticeEl.hidden && noticeEl.classList.contains('notice-error')) clearNotice();
}
/** Show what went wrong: ApiError messages are already words for a person. */
function showError(err) {
  if (err instanceof ApiError) {
    if (err.status === 401 && state.user) {
      sessionEnded();
      return;
    }
    notify(err.message);
  } else {
    console.error(err);
    notify(err && err.message ? err.message : 'Something went wrong.');
  }
}

// ---------- state updates ----------

function key(gid, rid) {
  return `${gid}/${rid}`;
}

/** @param {import('./protocol.js').GroupDetail} detail */
function storeGroup(detail) {
  for (const m of detail.members || []) learnName(m.user, m.name || null);
  state.groups.set(detail.id, detail);
  storeRoomLists(detail);
  emit('group', { group: detail.id });
}

/**
 * A group from the API carries each room's list at its version; the socket's `group` event
 * carries none. A list older than the one held (kept from the socket) is skipped, and so is
 * one of a room the socket shows only as a count (a big room).
 */
function storeRoomLists(detail) {
  for (const room of detail.rooms || []) {
    if (!Array.isArray(room.participants) || typeof room.version !== 'number') continue;
    const held = state.participants.get(key(detail.id, room.id));
    if (!held || (held.list && room.version > held.version)) setRoom(detail.id, room.id, room.version, room.participants, room.participants.length);
  }
}

/** Socket `group` events per group id: a fetch that one overtook must not undo it. */
const groupEvents = new Map();

function removeGroup(gid) {
  state.groups.delete(gid);
  for (const k of [...state.participants.keys()]) if (k.startsWith(`${gid}/`)) state.participants.delete(k);
  if (call.group === gid) call.stop();
  emit('group_removed', { group: gid });
}

async function refreshGroups() {
  const list = await api.groups();
  const seen = new Set();
  for (const summary of list) {
    seen.add(summary.id);
    const old = state.groups.get(summary.id);
    // Keep a loaded detail (members, rooms) but take the summary's fresh name/role.
    state.groups.set(summary.id, old && old.members ? { ...old, ...summary } : summary);
  }
  for (const gid of [...state.groups.keys()]) if (!seen.has(gid)) state.groups.delete(gid);
  state.groupsLoaded = true;
  emit('groups');
}

// Invitations: the socket's `invitations` event carries the whole list and is the newest
// word; a GET that was already under way when one arrived is not allowed to undo it.
let invitationsEpoch = 0;
/** @param {import('./protocol.js').InvitationView[]} list */
function setInvitations(list) {
  state.invitations = Array.isArray(list) ? list : [];
  state.invitationsLoaded = true;
  renderAccount();
  emit('invitations');
}

async function refreshInvitations() {
  const epoch = invitationsEpoch;
  const list = await api.invitations();
  if (epoch === invitationsEpoch) setInvitations(list);
}

/** Drop the invitations `pred` matches at once (accepted, declined, blocked here). */
function dropInvitations(pred) {
  invitationsEpoch += 1;
  setInvitations(state.invitations.filter((i) => !pred(i)));
}

function setBlocks(list) {
  state.blocks = Array.isArray(list) ? [...list].sort() : [];
  state.blocksLoaded = true;
  emit('blocks');
}

async function refreshBlocks() {
  setBlocks(await api.blocks());
}

async function loadGroup(gid) {
  const seen = groupEvents.get(gid) || 0;
  const detail = await api.group(gid);
  if ((groupEvents.get(gid) || 0) !== seen && state.groups.has(gid)) {
    // The socket told a change while this was on its way: what it said is newer (members,
    // rooms, names); only the room lists, which carry versions, may still be of use.
    storeRoomLists(detail);
    emit('group', { group: gid });
    return state.groups.get(gid);
  }
  storeGroup(detail);
  return detail;
}

// ---------- presence: who is in each room's call ----------
//
// The socket follows the group the page shows (`subscribe`) and the room of the call. A
// snapshot (`presence` for a group, `participants` for a room) or a count of a big room
// (`participant_count`, `participant_counts`) replaces what is held; a delta applies only on top of the version before it. A delta that
// skips a version means one was lost: the room is asked for again (`resync`).

let followed = null; // the group this socket follows

function setRoom(gid, rid, version, list, count) {
  if (Array.isArray(list)) {
    for (const p of list) learnName(p.user, p.name || null);
    list = [...list].sort(joinOrder);
  }
  state.participants.set(key(gid, rid), { version, list: Array.isArray(list) ? list : null, count });
  resyncing.delete(key(gid, rid));
}

function roomChanged(gid, rid) {
  emit('participants', { group: gid, room: rid });
  call.presenceChanged(gid, rid);
}

/** Follow `gid`'s presence (null: none), telling the node when it changes. */
function follow(gid) {
  if (gid === followed) return;
  followed = gid;
  socket.send(gid ? { type: 'subscribe', group: gid } : { type: 'unsubscribe' });
}

const resyncing = new Set();
function resync(gid, rid) {
  if (resyncing.has(key(gid, rid))) return;
  resyncing.add(key(gid, rid));
  socket.send({ type: 'resync', group: gid, room: rid });
}

/** @param {import('./protocol.js').PresenceDelta} m */
function applyDelta(m) {
  const k = key(m.group, m.room);
  const held = state.participants.get(k) || { version: 0, list: [], count: 0 };
  if (typeof m.version !== 'number' || !m.participant || m.version <= held.version) return;
  if (m.version !== held.version + 1 || !held.list) {
    resync(m.group, m.room);
    return;
  }
  const p = m.participant;
  const list = held.list.filter((x) => x.session !== p.session || x.user !== p.user);
  if (m.type !== 'participant_left') list.push(p);
  setRoom(m.group, m.room, m.version, list, list.length);
  roomChanged(m.group, m.room);
}

/** Everyone lists a call in the order people joined it (their home node's clock), then by
 *  session: the same order for everyone. */
function joinOrder(a, b) {
  return (a.joined_at || 0) - (b.joined_at || 0) || cmp(a.session, b.session);
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------- socket + call ----------

const socket = new Socket();
const call = new Call(
  socket,
  (gid, rid) => listOf(gid, rid),
  (m, kind) => notify(m, kind),
  (userId) => displayUser(userId, state.node),
);
call.subscribe((what) => {
  if (what === 'status' && call.status === 'joined') clearError(); // "Could not join…" is over
  emit('call', { what });
});

socket.on('group', (m) => {
  groupEvents.set(m.group.id, (groupEvents.get(m.group.id) || 0) + 1);
  storeGroup(m.group);
  emit('groups');
});
socket.on('group_removed', (m) => {
  removeGroup(m.group);
  emit('groups');
});
socket.on('invitations', (m) => {
  const known = state.invitationsLoaded ? new Set(state.invitations.map((i) => i.group)) : null;
  invitationsEpoch += 1;
  setInvitations(m.invitations);
  // Say so when one arrives (the notice is aria-live); answering is done on My groups.
  const fresh = known ? state.invitations.filter((i) => !known.has(i.group)) : [];
  const here = route.view === groupsView;
  if (fresh.length === 1) notify(`You are invited to “${fresh[0].name}” on ${fresh[0].home}.${here ? '' : ' Answer it on My groups.'}`, 'info');
  else if (fresh.length > 1) notify(`You have ${fresh.length} new invitations to groups of other nodes.${here ? '' : ' Answer them on My groups.'}`, 'info');
});
socket.on('presence', (m) => {
  // Every room of the group: those left out have had nobody in them (version 0).
  for (const k of [...state.participants.keys()]) if (k.startsWith(`${m.group}/`)) state.participants.set(k, { version: 0, list: [], count: 0 });
  for (const r of m.rooms || []) setRoom(m.group, r.room, r.version, r.participants, r.count);
  for (const k of [...state.participants.keys()]) if (k.startsWith(`${m.group}/`)) roomChanged(m.group, k.slice(m.group.length + 1));
});
socket.on('participants', (m) => {
  setRoom(m.group, m.room, m.version, m.participants || [], (m.participants || []).length);
  roomChanged(m.group, m.room);
});
socket.on('participant_count', (m) => {
  setRoom(m.group, m.room, m.version, null, m.count);
  roomChanged(m.group, m.room);
});
socket.on('participant_counts', (m) => {
  for (const r of m.rooms || []) {
    setRoom(m.group, r.room, r.version, null, r.count);
    roomChanged(m.group, r.room);
  }
});
for (const type of /** @type {const} */ (['participant_joined', 'participant_left', 'participant_changed'])) socket.on(type, applyDelta);
socket.on('hello', () => {
  // A new socket follows nothing yet: follow the page's group again (its snapshot follows).
  const wanted = followed;
  followed = null;
  resyncing.clear();
  if (state.user) follow(wanted);
  // Events may have been missed while disconnected: catch up.
  if (state.user) refreshAfterReconnect();
});
// The node closed this socket because its login session ended (logout elsewhere in this
// browser, a password change on another device, or the administrator disabled the account).
const SIGNED_OUT = { 'logged out': 'You logged out.', 'password changed': 'Your password was changed.', 'account disabled': 'Your account was disabled.' };
socket.on('signed_out', (m) => {
  if (state.user) sessionEnded(SIGNED_OUT[m.reason] || 'Your session has ended.');
});
// Another tab of this account joined a call: it holds the seat now.
socket.on('moved', (m) => {
  if (!call.inRoom(m.group, m.room)) return;
  call.stop();
  notify('Moved to another tab: you are in this call there.', 'info');
});
let lostConnection = false;
socket.on('close', (m) => {
  if (m.wasConnected && state.user) {
    lostConnection = true;
    notify('Lost the connection to the server. Reconnecting…', 'error');
  }
  emit('connection', { connected: false });
});
socket.on('open', () => {
  if (lostConnection) notify('Reconnected.', 'info');
  lostConnection = false;
  emit('connection', { connected: true });
});

let firstHello = true;
async function refreshAfterReconnect() {
  if (firstHello) {
    firstHello = false;
    return;
  }
  try {
    await Promise.all([refreshGroups(), refreshInvitations()]);
    const current = route.params && route.params.gid;
    if (current && state.groups.has(current)) await loadGroup(current);
  } catch (err) {
    showError(err);
  }
}

// ---------- session ----------

async function loggedIn(user) {
  clearError(); // e.g. a failed sign-up before this one worked
  state.user = user;
  learnName(user.id, user.display_name || null);
  state.node = user.node || state.node;
  firstHello = true;
  socket.connect();
  renderAccount();
  try {
    await Promise.all([refreshGroups(), refreshInvitations()]);
  } catch (err) {
    showError(err);
  }
}

async function logout() {
  call.leave();
  socket.close();
  try {
    await api.logout();
  } catch (err) {
    showError(err);
  }
  await resetSession();
  navigate('/login');
}

async function resetSession() {
  state.user = null;
  state.groups.clear();
  state.participants.clear();
  followed = null;
  state.groupsLoaded = false;
  state.invitations = [];
  state.invitationsLoaded = false;
  state.blocks = [];
  state.blocksLoaded = false;
  renderAccount();
  try {
    learnSignIn(await api.session()); // fresh CSRF token
  } catch {
    /* shown on the next request */
  }
}

async function sessionEnded(why = 'Your session has ended.') {
  call.stop();
  socket.close();
  await resetSession();
  notify(`${why} Log in again.`);
  navigate(`/login?next=${encodeURIComponent(location.pathname)}`);
}

function renderAccount() {
  const nav = document.getElementById('account');
  if (!state.user) {
    replaceChildren(nav);
    return;
  }
  const waiting = state.invitations.length;
  replaceChildren(
    nav,
    waiting
      ? link('/', { class: 'invitations-hint', testid: 'invitations-hint', title: 'Invitations to groups of other nodes, on My groups' },
          h('span', { class: 'count' }, String(waiting)),
          h('span', {}, waiting === 1 ? ' invitation' : ' invitations'),
          h('span', { class: 'sr-only' }, ' waiting for your answer'))
      : null,
    state.user.admin ? link('/admin', { class: 'btn btn-quiet', testid: 'goto-admin' }, 'Admin') : null,
    h('span', { class: 'whoami', title: state.user.id, testid: 'whoami' }, displayUser(state.user.id, state.node)),
    h('button', { class: 'btn btn-quiet', type: 'button', testid: 'logout', onclick: () => logout() }, 'Log out'),
  );
}

// ---------- routing ----------

const routes = [
  { pattern: /^\/$/, view: groupsView, auth: true },
  { pattern: /^\/login$/, view: authView, props: { mode: 'login' } },
  { pattern: /^\/register$/, view: authView, props: { mode: 'register' } },
  { pattern: /^\/g\/(?<gid>[^/]+)$/, view: groupView, auth: true },
  { pattern: /^\/g\/(?<gid>[^/]+)\/r\/(?<rid>[^/]+)$/, view: roomView, auth: true },
  { pattern: /^\/invite\/(?<code>[^/]+)$/, view: inviteView },
  { pattern: /^\/admin$/, view: adminView, auth: true },
];

const main = document.getElementById('main');

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else if (path !== location.pathname + location.search) history.pushState(null, '', path);
  render();
}

function render() {
  const path = location.pathname;
  let match = null;
  for (const r of routes) {
    const m = path.match(r.pattern);
    if (m) {
      match = { ...r, params: { ...(m.groups || {}), ...(r.props || {}) } };
      break;
    }
  }
  if (match && match.auth && !state.user) {
    navigate(`/login?next=${encodeURIComponent(path)}`, { replace: true });
    return;
  }
  if (match && match.view === authView && state.user) {
    navigate(safeNext() || '/', { replace: true });
    return;
  }
  if (route.instance && route.instance.unmount) route.instance.unmount();
  const view = match ? match.view : notFoundView;
  const params = match ? decodeParams(match.params) : {};
  route = { view, params, instance: null };
  if (state.user) follow(params.gid || null);
  main.textContent = '';
  main.focus({ preventScroll: true }); // off the link that was followed, which is gone
  route.instance = view.mount(main, ctx, params) || {};
  focusPage(route);
  for (const fn of listeners) fn('route', { path });
}

/**
 * Where the keyboard goes on a new page: a view whose point is a form or one action (log in,
 * sign up, accept an invite) focuses that itself; otherwise the page's heading, so a screen
 * reader says where one is. A view that loads first gets its heading later, and may render
 * it again: while the page settles (until the person clicks, or a few seconds), focus that
 * was left nowhere goes to the heading. Focus the view or the person put elsewhere stays.
 */
const SETTLE_FOCUS_MS = 5000;
let stopFocusWatch = () => {};
function focusPage(shown) {
  stopFocusWatch();
  let ours = null; // the heading focused here
  const place = () => {
    if (route !== shown) return false;
    const at = document.activeElement;
    if (at && at !== main && at !== document.body) return at === ours; // elsewhere: leave it
    const heading = main.querySelector('h1');
    if (heading) {
      if (!heading.hasAttribute('tabindex')) heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
      ours = heading;
    }
    return true;
  };
  if (!place()) return;
  const watch = new MutationObserver(() => {
    if (!place()) stop();
  });
  const timer = setTimeout(() => stop(), SETTLE_FOCUS_MS);
  const stop = () => {
    watch.disconnect();
    clearTimeout(timer);
    document.removeEventListener('pointerdown', stop, true);
  };
  watch.observe(main, { childList: true, subtree: true });
  document.addEventListener('pointerdown', stop, true);
  stopFocusWatch = stop;
}

/** @returns {any} the view's params */
function decodeParams(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) out[k] = typeof v === 'string' ? decodeURIComponent(v) : v;
  return out;
}

/** `?next=` only ever points inside this site. */
function safeNext() {
  const next = new URLSearchParams(location.search).get('next');
  return next && next.startsWith('/') && !next.startsWith('//') ? next : null;
}

document.addEventListener('click', (ev) => {
  const target = /** @type {Element} */ (ev.target);
  const a = /** @type {HTMLAnchorElement} */ (target.closest && target.closest('a[data-route]'));
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  ev.preventDefault();
  clearError(); // what went wrong on the screen left behind no longer applies
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => {
  clearError();
  render();
});

// Push-to-talk: hold Space (outside text fields) to talk.
function typingTarget(el) {
  return el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName)) && el.type !== 'checkbox' && el.type !== 'range';
}
window.addEventListener('keydown', (ev) => {
  if (ev.code !== 'Space' || !call.pushToTalk || call.status === 'idle' || typingTarget(ev.target)) return;
  ev.preventDefault();
  call.setTalking(true);
});
window.addEventListener('keyup', (ev) => {
  if (ev.code !== 'Space' || !call.pushToTalk || call.status === 'idle') return;
  if (!typingTarget(ev.target)) ev.preventDefault();
  call.setTalking(false);
});
window.addEventListener('blur', () => call.setTalking(false));
document.addEventListener('click', () => {
  if (call.speakers.blocked) call.speakers.resumeAll();
});

// ---------- context given to views ----------

const ctx = {
  state,
  api,
  call,
  socket,
  navigate,
  notify,
  showError,
  refreshGroups,
  refreshInvitations,
  dropInvitations,
  refreshBlocks,
  setBlocks,
  loadGroup,
  storeGroup,
  removeGroup,
  loggedIn: async (user) => {
    await loggedIn(user);
    navigate(safeNext() || '/', { replace: true });
  },
  nextPath: safeNext,
  me: () => (state.user ? state.user.id : null),
  /** Sets this user's display name (empty: none) and shows it everywhere at once. */
  setDisplayName: async (name) => {
    const user = await api.setProfile(name);
    state.user = { ...state.user, ...user };
    learnName(user.id, user.display_name || null);
    renderAccount();
    emit('profile');
    return user;
  },
  show: (userId) => displayUser(userId, state.node),
  /** The same as show(), as DOM nodes with the node part styled apart. */
  label: (userId) => userLabel(userId, state.node),
  /** The node a group is managed on, or null when that is this node. */
  remoteHome: (g) => (g && g.home && state.node && g.home !== state.node ? g.home : null),
  /** Who is in a room's call ([] when nobody is, or when only the count is known). */
  participants: (gid, rid) => listOf(gid, rid),
  /** How many are in a room's call (known also for big rooms shown as a count). */
  participantCount: (gid, rid) => (state.participants.get(key(gid, rid)) || { count: 0 }).count,
  /** False for a big room whose call this tab is not in: the node sends only its count. */
  participantsListed: (gid, rid) => !state.participants.has(key(gid, rid)) || !!state.participants.get(key(gid, rid)).list,
};

function listOf(gid, rid) {
  const held = state.participants.get(key(gid, rid));
  return (held && held.list) || [];
}

mountCallbar(document.getElementById('callbar'), ctx, (fn) => listeners.add(fn));

// The call in the phone's notification area, and the screen kept on while in one.
const device = watchCallOnDevice(call, (gid, rid) => {
  const g = state.groups.get(gid);
  const r = g && (g.rooms || []).find((x) => x.id === rid);
  return { group: g ? g.name : '', room: r ? r.name : '' };
});
listeners.add((kind) => {
  if (kind === 'group') device.update();
});

// ---------- test / diagnostics hook (read-only) ----------

Object.defineProperty(window, '__voicechat', {
  value: Object.freeze({
    /** Map "user/session" → RTCPeerConnection of the current call (and "sfu" → the audio server's). */
    peers: () => call.peerConnections(),
    /** The local microphone MediaStream of the current (or last) call, or null. */
    localStream: () => call.localStream,
    /** "idle" | "joining" | "joined". */
    callStatus: () => call.status,
    /**
     * One entry per remote session of the call: `{user, session, state, iceState, unreachable,
     * path: "direct"|"relayed"|null, localCandidateType, remoteCandidateType, protocol}`
     * (`protocol`: the local candidate's relayProtocol when our end is relayed).
     */
    connections: () => call.connections(),
    /** The node's audio server: `{state, slots: [user id|null], mode: "mesh"|"sfu"|null, unreachable: [node], cascade: [node]}`. */
    sfu: () => call.sfuInfo(),
    /** The ICE servers of the call, without credentials: `{urls: [...], expiresAt, fetchedAt}`. */
    ice: () => ({ urls: call.iceServers.flatMap((s) => [].concat(s.urls || [])), expiresAt: call.iceExpiresAt, fetchedAt: call.iceFetchedAt }),
    /**
     * End-to-end encryption: `{on, code, why}` as the page says it, and the frame worker's
     * counts `{encrypted, decrypted, failed, plaintext, dropped_no_key, by_kid, send_kid,
     * failed_unwraps, code}` (null outside a call).
     */
    e2ee: async () => ({ ...call.keys.status(), stats: await call.keys.stats() }),
    /** Try this call's receive keys on an SFrame captured elsewhere (bytes) → `{ok, kid, error}`. */
    tryDecrypt: (bytes) => (call.keys.transforms ? call.keys.transforms.tryDecrypt(Uint8Array.from(bytes)) : null),
    /** The call on the device: `{inCall, wakeLock, title, artist}` (Media Session, Wake Lock). */
    device: () => device.state(),
  }),
  writable: false,
  configurable: false,
});

// ---------- start ----------

/** Opening the page while the node cannot be reached (the app shell came from the service
 *  worker): say so, and try again, at once when the browser is back online. */
const OFFLINE_RETRY_MS = [1000, 2000, 4000, 8000, 15_000];
let offlineTries = 0;

async function start() {
  try {
    const s = await api.session();
    learnSignIn(s);
    state.node = s.node || '';
    if (s.user) await loggedIn(s.user);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'network') {
      replaceChildren(main, h('section', { class: 'card offline', testid: 'offline' }, h('h1', {}, 'Offline'), h('p', {}, 'This node cannot be reached. Reconnecting…')));
      focusPage(route);
      const retry = () => {
        window.removeEventListener('online', retry);
        clearTimeout(timer);
        start();
      };
      const timer = setTimeout(retry, OFFLINE_RETRY_MS[Math.min(offlineTries++, OFFLINE_RETRY_MS.length - 1)]);
      window.addEventListener('online', retry);
      return;
    }
    showError(err);
  }
  offlineTries = 0;
  render();
}

// The installable app: the service worker keeps the app shell for when the node is out of reach.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((err) => console.warn('no service worker', err));
}

start();

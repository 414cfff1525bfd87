//! The node's HTTP API (node/API.md): JSON in and out, the CSRF header, errors as readable words.

let csrfToken = null;

/** An API failure with words for a person in `message`. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const FALLBACK = {
  bad_request: 'That request was not accepted. Check the fields and try again.',
  unauthenticated: 'You are not logged in.',
  csrf: 'Your page is out of date. Reload and try again.',
  forbidden: 'You do not have permission to do that.',
  not_found: 'Not found, or you do not have access to it.',
  conflict: 'That already exists.',
  gone: 'This invite has expired, was used up, or was revoked.',
  too_large: 'That is too large.',
  rate_limited: 'Too many attempts. Wait a little and try again.',
  internal: 'Something went wrong on the server. Try again later.',
};

export function setCsrf(token) {
  if (token) csrfToken = token;
}

/** Send one request; resolves to the parsed JSON body (or null for 204), rejects with ApiError. */
export async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  /** @type {RequestInit} */
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;

  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.ok) return data;

  const code = (data && data.error) || 'internal';
  let message = (data && data.message) || FALLBACK[code] || `The server answered ${res.status}.`;
  const retry = res.headers.get('Retry-After');
  if (res.status === 429 && retry) message += ` (try again in ${retry} s)`;
  throw new ApiError(res.status, code, message, retry ? Number(retry) : null);
}

export const get = (path) => request('GET', path);
export const post = (path, body = {}) => request('POST', path, body);
export const patch = (path, body) => request('PATCH', path, body);
export const put = (path, body) => request('PUT', path, body);
export const del = (path) => request('DELETE', path);

const seg = encodeURIComponent;

/**
 * A member as `GET /api/groups/{gid}` lists them.
 * @typedef {import('./protocol.js').MemberView} Member
 */

/**
 * A group of another node that added this user and waits for their answer
 * (`GET /api/invitations`, and the socket's `{"type":"invitations","invitations":[…]}`).
 * Nothing of the group shows (not in `GET /api/groups`, 404 on it) until it is accepted.
 * @typedef {import('./protocol.js').InvitationView} Invitation
 */
/** @typedef {import('./protocol.js').GroupSummary} GroupSummary */
/** @typedef {import('./protocol.js').GroupDetail} GroupDetail */

/** Typed calls, one per API.md row. */
export const api = {
  async session() {
    const s = await get('/api/session');
    setCsrf(s.csrf);
    return s;
  },
  /** `invite`: a group invite code, the ticket on an invite-only node (null otherwise). */
  async register(username, password, invite = null, displayName = '') {
    const body = { username, password };
    if (invite) body.invite = invite;
    if (displayName) body.display_name = displayName;
    const r = await post('/api/register', body);
    setCsrf(r.csrf);
    return r;
  },
  async login(username, password) {
    const r = await post('/api/login', { username, password });
    setCsrf(r.csrf);
    return r;
  },
  logout: () => post('/api/logout'),
  /** Sets the display name (empty: none); resolves to the user as the session shows it. */
  setProfile: (displayName) => put('/api/profile', { display_name: displayName }),
  changePassword: (oldPassword, newPassword) =>
    post('/api/password', { old_password: oldPassword, new_password: newPassword }),
  adminUsers: () => get('/api/admin/users'),
  adminSetDisabled: (name, disabled) => patch(`/api/admin/users/${seg(name)}`, { disabled }),
  adminSettings: () => get('/api/admin/settings'),
  adminSetRegistration: (registration) => put('/api/admin/settings', { registration }),
  /** @returns {Promise<GroupSummary[]>} */
  groups: () => get('/api/groups'),
  /** @returns {Promise<GroupDetail>} */
  createGroup: (name) => post('/api/groups', { name }),
  /** @returns {Promise<GroupDetail>} */
  group: (gid) => get(`/api/groups/${seg(gid)}`),
  /** @returns {Promise<GroupDetail>} */
  renameGroup: (gid, name) => patch(`/api/groups/${seg(gid)}`, { name }),
  deleteGroup: (gid) => del(`/api/groups/${seg(gid)}`),
  addMember: (gid, user, role) => post(`/api/groups/${seg(gid)}/members`, role ? { user, role } : { user }),
  setRole: (gid, user, role) => patch(`/api/groups/${seg(gid)}/members/${seg(user)}`, { role }),
  removeMember: (gid, user) => del(`/api/groups/${seg(gid)}/members/${seg(user)}`),
  invites: (gid) => get(`/api/groups/${seg(gid)}/invites`),
  createInvite: (gid, opts = {}) => post(`/api/groups/${seg(gid)}/invites`, opts),
  revokeInvite: (gid, code) => del(`/api/groups/${seg(gid)}/invites/${seg(code)}`),
  invite: (code) => get(`/api/invites/${seg(code)}`),
  /** @returns {Promise<GroupDetail>} */
  acceptInvite: (code) => post(`/api/invites/${seg(code)}/accept`),
  /**
   * Join a group of another (federated) node through its invite link.
   * @returns {Promise<GroupDetail>}
   */
  acceptRemoteInvite: (link) => post('/api/invites/remote', { link }),
  /** @returns {Promise<Invitation[]>} newest first */
  invitations: () => get('/api/invitations'),
  /**
   * Accept: resolves to the GroupDetail; the group now shows.
   * @returns {Promise<GroupDetail>}
   */
  acceptInvitation: (gid) => post(`/api/invitations/${seg(gid)}/accept`),
  /** Decline (204): the group's home is told; nothing of the group shows. */
  declineInvitation: (gid) => post(`/api/invitations/${seg(gid)}/decline`),
  /** @returns {Promise<string[]>} nodes whose invitations this user refuses */
  blocks: () => get('/api/blocks'),
  /** Refuse a node's invitations: its pending ones are declined, later ones declined silently. */
  blockNode: (node) => post('/api/blocks', { node }),
  unblockNode: (node) => del(`/api/blocks/${seg(node)}`),
  /** A room; `stage`: speakers and listeners (moderators invite people to speak). */
  createRoom: (gid, name, stage = false) => post(`/api/groups/${seg(gid)}/rooms`, stage ? { name, stage: true } : { name }),
  renameRoom: (gid, rid, name) => patch(`/api/groups/${seg(gid)}/rooms/${seg(rid)}`, { name }),
  deleteRoom: (gid, rid) => del(`/api/groups/${seg(gid)}/rooms/${seg(rid)}`),
  /**
   * ICE servers for a call in `room` of `group` (`{ice_servers: [RTCIceServer], expires_at}`):
   * with both, the node adds its own TURN server with credentials valid until `expires_at`
   * (unix seconds; null or missing when nothing expires); without, only servers that need no
   * credentials.
   */
  ice: (group, room) => get(group && room ? `/api/ice?group=${seg(group)}&room=${seg(room)}` : '/api/ice'),
};

//! The messages the node sends on the socket (and the views the API answers with that they
//! carry), as JSDoc types: nothing runs here. `tsc --checkJs` (tests/types.test.mjs) checks
//! every `socket.on(type, fn)` handler against them. The node's side: node/src/ws/mod.rs,
//! node/src/core/{calls,stage,views}.rs, node/src/rooms/events.rs, node/src/http/auth.rs,
//! node/src/hub.rs; the prose: node/API.md. Ids are text: a user id is `name@node`, group,
//! room and session ids are 32 hex digits.

export {};

// ---------- what the messages carry ----------

/** @typedef {'member' | 'admin' | 'owner'} Role */
/** @typedef {'mesh' | 'sfu'} CallMode */

/**
 * Someone's place on a stage (absent in a conversation; for people of other nodes, as their node signed it).
 * @typedef {object} StageSeat
 * @property {boolean} speaker on stage: heard by everyone
 * @property {boolean} hand a listener's raised hand
 * @property {boolean} invited a moderator asked this listener to speak; not answered yet
 */

/**
 * One session in a room's call.
 * @typedef {object} Participant
 * @property {string} user
 * @property {string} session
 * @property {boolean} muted
 * @property {StageSeat} [stage]
 * @property {string} [name] their display name, if they chose one
 * @property {number} joined_at unix ms when the session joined (its home node's clock): the list's order
 */

/**
 * A room. Over HTTP it carries who is in its call and the list's version; the socket's
 * `group` message leaves both out.
 * @typedef {object} RoomView
 * @property {string} id
 * @property {string} group
 * @property {string} name
 * @property {boolean} stage a stage (speakers and listeners) rather than a conversation
 * @property {Participant[]} [participants]
 * @property {number} [version]
 */

/**
 * A member as the group's members see them.
 * @typedef {object} MemberView
 * @property {string} user
 * @property {Role} role
 * @property {number} added_at unix seconds
 * @property {'active' | 'invited'} status `invited`: a user of another node who has not accepted yet
 * @property {string} [name] their display name, if known
 */

/**
 * A group in the list of one's groups.
 * @typedef {object} GroupSummary
 * @property {string} id
 * @property {string} name
 * @property {string} home the node it lives on
 * @property {Role} role the viewer's
 */

/**
 * A group as a member sees it.
 * @typedef {GroupSummary & {members: MemberView[], rooms: RoomView[]}} GroupDetail
 */

/**
 * A group of another node that added this user, waiting for an answer.
 * @typedef {object} InvitationView
 * @property {string} group
 * @property {string} name
 * @property {string} home
 * @property {Role} role offered
 * @property {number} invited_at unix seconds
 */

/**
 * A room in a `presence` snapshot (the list is left out for a big room this socket is not in).
 * @typedef {object} RoomState
 * @property {string} room
 * @property {number} version
 * @property {number} count
 * @property {Participant[]} [participants]
 */

/**
 * A room in `participant_counts`.
 * @typedef {object} RoomCount
 * @property {string} room
 * @property {number} version
 * @property {number} count
 */

/**
 * What an `e2ee_hello` says (opaque to the node; made by e2ee/keys.js).
 * @typedef {object} E2eeHelloData
 * @property {number} v
 * @property {string} pub the session's public key, base64url
 * @property {string} [fp] its DTLS certificate's fingerprint
 * @property {boolean} [e2ee] false: this page sends audio in the clear
 * @property {boolean} [sends] it may send audio (it wants our public key)
 * @property {boolean} [again] it lost our key: send it again
 */

/**
 * One sender's media key, wrapped for this session.
 * @typedef {object} E2eeKeyData
 * @property {number} kid
 * @property {string} wrapped base64url
 */

/**
 * What a `signal` carries (opaque to the node).
 * @typedef {{description?: RTCSessionDescriptionInit, candidate?: RTCIceCandidateInit}} SignalData
 */

/** @typedef {{user: string, session: string} | null} SfuSlot who a slot of the audio server carries */

// ---------- the messages ----------

/**
 * Every message of the node, by `type`.
 * @typedef {object} ServerMessages
 * @property {{type: 'hello', user: string, session: string, resume: string, resumed: boolean}} hello the first message of every socket: its session, the token to resume it on a new socket, and whether the node still held it
 * @property {{type: 'pong'}} pong
 * @property {{type: 'error', code: string, message: string, in_reply_to: string | null}} error a message refused or failed
 * @property {{type: 'joined', group: string, room: string, session: string, mode: CallMode, cascade?: string[]}} joined in the call (`cascade`: as in `cascade`)
 * @property {{type: 'cascade', group: string, room: string, nodes: string[]}} cascade the nodes whose people this call reaches through the nodes' audio servers, both ways: no direct connection to them
 * @property {{type: 'left', group: string, room: string}} left out of the call (left, removed, or the room went)
 * @property {{type: 'moved', group: string, room: string, to_session: string}} moved another tab of this account took the seat
 * @property {{type: 'call_mode', group: string, room: string, mode: CallMode}} call_mode the call moved to or from the audio server
 * @property {{type: 'node_reach', group: string, room: string, node: string, up: boolean}} node_reach on a stage across nodes: this node can (`up`) or can no longer pull the audio of `node`'s people
 * @property {{type: 'signal', from: string, from_session: string, group: string, room: string, kind: 'offer' | 'answer' | 'candidate' | 'bye', data: SignalData}} signal WebRTC signaling from a peer
 * @property {{type: 'sfu_answer', group: string, room: string, sdp: string}} sfu_answer the audio server's answer
 * @property {{type: 'sfu_slots', group: string, room: string, slots: SfuSlot[]}} sfu_slots who each slot carries
 * @property {{type: 'sfu_lost', group: string, room: string}} sfu_lost the audio server dropped this connection
 * @property {{type: 'e2ee_hello', from: string, from_session: string, data: E2eeHelloData}} e2ee_hello a session's public key
 * @property {{type: 'e2ee_key', from: string, from_session: string, common: E2eeHelloData, data: E2eeKeyData}} e2ee_key a sender's key, wrapped for us
 * @property {{type: 'e2ee_absent', count: number}} e2ee_absent recipients of an `e2ee_keys` no longer in the call
 * @property {{type: 'moderated', group: string, room: string, action: 'invite' | 'to_audience' | 'mute' | 'remove', by: string}} moderated a moderator acted on us
 * @property {{type: 'group', group: GroupDetail}} group a group changed (rooms without presence)
 * @property {{type: 'group_removed', group: string}} group_removed a group is gone (deleted, or we are out)
 * @property {{type: 'invitations', invitations: InvitationView[]}} invitations the whole list of waiting invitations
 * @property {{type: 'signed_out', reason?: string}} signed_out the login session ended (`logged out`, `password changed`, `account disabled`)
 * @property {{type: 'presence', group: string, rooms: RoomState[]}} presence every room of a subscribed group
 * @property {{type: 'participants', group: string, room: string, version: number, participants: Participant[]}} participants one room's whole list
 * @property {{type: 'participant_count', group: string, room: string, version: number, count: number}} participant_count a big room's count
 * @property {{type: 'participant_counts', group: string, rooms: RoomCount[]}} participant_counts counts of a group's big rooms
 * @property {PresenceDelta & {type: 'participant_joined'}} participant_joined
 * @property {PresenceDelta & {type: 'participant_left'}} participant_left its entry as it was
 * @property {PresenceDelta & {type: 'participant_changed'}} participant_changed its new entry
 */

/**
 * A change of one room's list, numbered with the version it leads to.
 * @typedef {object} PresenceDelta
 * @property {'participant_joined' | 'participant_left' | 'participant_changed'} type
 * @property {string} group
 * @property {string} room
 * @property {number} version
 * @property {Participant} participant
 */

/** @typedef {ServerMessages[keyof ServerMessages]} ServerMessage any message of the node */

/**
 * What `Socket.on` listens to: the node's messages, and the socket's own `open` and `close`.
 * @typedef {ServerMessages & {open: {}, close: {code: number, wasConnected: boolean}}} SocketEvents
 */

// ---------- what a page sends ----------

/**
 * Every message a page sends, by `type` (node/src/ws/messages.rs, which refuses unknown
 * fields with `bad_message`).
 * @typedef {object} ClientMessages
 * @property {{type: 'ping'}} ping keep-alive, and the liveness probe
 * @property {{type: 'join', group: string, room: string, muted?: boolean}} join
 * @property {{type: 'leave'}} leave
 * @property {{type: 'mute', muted: boolean}} mute
 * @property {{type: 'subscribe', group: string}} subscribe follow a group's presence
 * @property {{type: 'unsubscribe'}} unsubscribe
 * @property {{type: 'resync', group: string, room: string}} resync a room's list again (a version was skipped)
 * @property {{type: 'signal', to: string, to_session: string, kind: 'offer' | 'answer' | 'candidate' | 'bye', data: SignalData}} signal
 * @property {{type: 'sfu_offer', sdp: string}} sfu_offer
 * @property {{type: 'hand', up: boolean}} hand
 * @property {{type: 'stage_answer', accept: boolean}} stage_answer
 * @property {{type: 'stage_leave'}} stage_leave
 * @property {{type: 'moderate', action: 'invite' | 'to_audience' | 'mute' | 'remove', user: string, session: string}} moderate
 * @property {{type: 'e2ee_hello', data: E2eeHelloData, to?: string, to_session?: string, everyone?: boolean}} e2ee_hello
 * @property {{type: 'e2ee_keys', common: E2eeHelloData, keys: {to: string, to_session: string, data: E2eeKeyData}[]}} e2ee_keys
 */

/** @typedef {ClientMessages[keyof ClientMessages]} ClientMessage any message a page sends */

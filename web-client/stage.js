//! This tab's place in a stage room's call (speakers and listeners): its seat as the node
//! lists it (`stage: {speaker, hand, invited}` on our own participant entry), the stage
//! messages it sends (`hand`, `stage_answer`, `stage_leave`, and a moderator's `moderate`),
//! and what a moderator did to us (`moderated`) in words. The microphone follows the seat
//! (voice.js): a listener's is never opened.

/** Replies to these messages are the stage's to say. */
const STAGE_MESSAGES = ['hand', 'stage_answer', 'stage_leave', 'moderate'];

/** Our seat from the node's list entry: `{speaker, hand, invited}`, or null (no stage). */
function seatOf(entry) {
  const s = entry && entry.stage;
  return s ? { speaker: !!s.speaker, hand: !!s.hand, invited: !!s.invited } : null;
}

export class Stage {
  /** @param {import('./call.js').Call} call */
  constructor(call) {
    this.call = call;
    this.hint = false; // the room is a stage (the view says so on join, before the list does)
    this.seat = null;
    this.invitedBy = null; // who invited us to speak, while the invitation stands
    this.comingBack = false; // a moderator in the audience asked to go back on stage
    /** The last thing a moderator did to us in this room: `{action, by, group, room}`. */
    this.moderation = null;
    call.socket.on('moderated', (m) => this.onModerated(m));
    call.socket.on('error', (m) => {
      if (STAGE_MESSAGES.includes(m.in_reply_to) && call.status !== 'idle') call.notify(`The stage refused that: ${m.message || m.code}`);
    });
  }

  /** Whether this call is on a stage. */
  get active() {
    return this.call.status !== 'idle' && (this.hint || this.seat !== null);
  }

  /** Whether we may be heard: in a conversation always, on a stage only on stage. */
  get mayTalk() {
    return !this.active || !!(this.seat && this.seat.speaker);
  }

  /** A call starts (`isStage`: what the room says). */
  begin(isStage) {
    this.hint = !!isStage;
    this.seat = null;
    this.invitedBy = null;
    this.comingBack = false;
    this.moderation = null;
  }

  /** Read our seat again from the app's list (after a `participants` or `joined`). */
  refresh() {
    const call = this.call;
    if (call.status === 'idle') return;
    const list = call.getParticipants(call.group, call.room) || [];
    const seat = seatOf(list.find((p) => p.session === call.mySession));
    if (JSON.stringify(seat) === JSON.stringify(this.seat)) return;
    this.seat = seat;
    if (!seat || !seat.invited) this.invitedBy = null;
    if (seat && seat.invited && this.comingBack) this.answer(true); // our own invitation: yes
    if (!seat || seat.speaker) this.comingBack = false;
    call.voice.follow();
    call.changed('stage');
  }

  /** @param {import('./protocol.js').ClientMessage} msg */
  send(msg) {
    this.call.socket.send(msg);
  }

  raiseHand(up) {
    this.send({ type: 'hand', up: !!up });
  }

  /** Answer an invitation to speak: yes opens the microphone once the node agrees. */
  answer(accept) {
    this.send({ type: 'stage_answer', accept: !!accept });
  }

  leaveStage() {
    this.send({ type: 'stage_leave' });
  }

  /** As a moderator who stepped down: back on stage (we invite ourselves and say yes). */
  backOnStage() {
    const call = this.call;
    if (!call.myUser || !call.mySession) return;
    this.comingBack = true;
    this.moderate('invite', { user: call.myUser, session: call.mySession });
  }

  /** As a moderator: `action` (`invite`, `to_audience`, `mute`, `remove`) on participant `p`. */
  moderate(action, p) {
    this.send({ type: 'moderate', action, user: p.user, session: p.session });
  }

  /** @param {import('./protocol.js').ServerMessages['moderated']} m */
  onModerated(m) {
    const call = this.call;
    if (!call.inRoom(m.group, m.room)) return;
    const by = typeof m.by === 'string' ? m.by : null;
    if (m.action === 'invite') {
      this.invitedBy = by;
      call.changed('stage');
      return;
    }
    this.moderation = { action: m.action, by, group: m.group, room: m.room };
    if (m.action === 'mute') {
      call.voice.setMuted(true);
      call.notify(moderationText(this.moderation, call.show));
      call.changed('stage');
    } else if (m.action === 'remove') {
      // The node has taken us out (a `left` follows): stop here, with the reason.
      call.stop();
      call.notify(moderationText(this.moderation, call.show));
    }
  }
}

/** A moderator's action on us, in words. */
export function moderationText(moderation, show = (u) => u) {
  const who = moderation.by ? ` (${show(moderation.by)})` : '';
  if (moderation.action === 'mute') return `A moderator${who} muted you. Unmute when you want to speak again.`;
  if (moderation.action === 'remove') return `A moderator${who} took you out of the call.`;
  return '';
}

//! The stage parts of the room view (a stage room: speakers and listeners): the audience
//! list (raised hands, who is invited), our own stage controls (raise a hand, answer an
//! invitation, leave the stage), what a moderator did to us, and a moderator's controls
//! per person (invite to speak, move to the audience, mute, remove from the call).
//! People on stage are the room view's ordinary participant rows.

import { h, replaceChildren } from '../dom.js';
import { confirmButton } from './widgets.js';
import { moderationText } from '../stage.js';

/** Group admins and the owner moderate its stages. */
export const isModerator = (g) => !!g && (g.role === 'admin' || g.role === 'owner');

/**
 * The room's list as `{speakers, audience}`. People of other nodes come with the place their
 * node signed in their presence; from a node that sends none they are listed with the
 * speakers, where their audio is shown.
 * Raised hands come first in the audience.
 */
export function splitStage(list) {
  const speakers = [];
  const audience = [];
  for (const p of list) (p.stage && !p.stage.speaker ? audience : speakers).push(p);
  audience.sort((a, b) => Number(!!b.stage.hand) - Number(!!a.stage.hand));
  return { speakers, audience };
}

/** The moderator's buttons for participant `p` (none for ourselves, or out of the call). */
export function moderatorActions(ctx, call, p) {
  const name = ctx.show(p.user);
  const button = (action, text, testid, label) =>
    h('button', { class: 'btn btn-small', type: 'button', testid: `${testid}-${p.user}`, 'aria-label': label, onclick: () => call.stage.moderate(action, p) }, text);
  const listener = p.stage && !p.stage.speaker;
  return [
    listener && !p.stage.invited ? button('invite', 'Invite to speak', 'moderate-invite', `Invite to speak: ${name}`) : null,
    p.stage && p.stage.speaker ? button('to_audience', 'Move to audience', 'moderate-audience', `Move to audience: ${name}`) : null,
    !p.muted && !listener ? button('mute', 'Mute', 'moderate-mute', `Mute ${name}`) : null,
    confirmButton({
      text: 'Remove from call',
      ariaLabel: `Remove from call: ${name}`,
      question: `Take ${name} out of the call? They can join again.`,
      testid: `moderate-remove-${p.user}`,
      onError: ctx.showError,
      action: async () => call.stage.moderate('remove', p),
    }),
  ];
}

/**
 * Put the moderator's buttons for `p` into `box` when what they depend on changed (so a
 * button someone is about to press is not replaced under them).
 */
export function fillActions(box, ctx, call, p, allowed) {
  const key = allowed ? JSON.stringify([p.muted, p.stage || null]) : '';
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  replaceChildren(box, allowed ? moderatorActions(ctx, call, p) : null);
  box.hidden = !allowed;
}

/** The audience: a count in the heading and one row per listener, hands and invitations marked. */
export function audienceList(ctx, call) {
  const count = h('span', { testid: 'audience-count' }, '0');
  const title = h('h2', { class: 'card-title stage-title' }, 'Audience (', count, ')');
  const list = h('ul', { class: 'participants audience', testid: 'stage-audience', 'aria-label': 'Audience' });
  const rows = new Map(); // session → row

  function makeRow(p, self) {
    const name = ctx.show(p.user);
    const hand = h('span', { class: 'badge hand', testid: `hand-${p.user}`, role: 'img', 'aria-label': `${name} raised a hand`, title: `${name} raised a hand` }, '✋ Hand up');
    const invited = h('span', { class: 'badge status-invited', testid: `invited-${p.user}`, title: 'Invited to speak: has not answered yet' }, 'Invited');
    const muted = h('span', { class: 'badge muted-badge' }, 'Muted');
    const actions = h('span', { class: 'row-actions' });
    const li = h('li', { class: `participant listener${self ? ' is-self' : ''}`, testid: `participant-${p.user}`, dataset: { session: p.session, user: p.user } },
      h('span', { class: 'who' },
        h('span', { class: 'avatar', 'aria-hidden': 'true' }, (name[0] || '?').toUpperCase()),
        h('span', { class: 'name', testid: `participant-name-${p.user}` }, ctx.label(p.user), self ? h('span', { class: 'muted' }, ' (you)') : null),
        hand, invited, muted),
      actions);
    return { li, hand, invited, muted, actions, self };
  }

  /** Show `people` (the audience); `moderate`: whether our buttons go on their rows. */
  function render(people, moderate) {
    count.textContent = String(people.length);
    const seen = new Set();
    for (const p of people) {
      seen.add(p.session);
      const self = p.session === call.mySession;
      let row = rows.get(p.session);
      if (!row) rows.set(p.session, (row = makeRow(p, self)));
      list.append(row.li);
      row.hand.hidden = !p.stage.hand;
      row.invited.hidden = !p.stage.invited;
      row.muted.hidden = !p.muted;
      row.li.dataset.hand = String(!!p.stage.hand);
      fillActions(row.actions, ctx, call, p, moderate && !self);
    }
    for (const [session, row] of [...rows]) {
      if (seen.has(session)) continue;
      row.li.remove();
      rows.delete(session);
    }
    const empty = list.querySelector('.empty-row');
    if (people.length && empty) empty.remove();
    if (!people.length && !empty) list.append(h('li', { class: 'empty-row muted' }, 'Nobody is listening yet.'));
  }

  return { el: h('div', { class: 'stage-section' }, title, list), render };
}

/**
 * Our own place on the stage, for the Call card: in the audience a "Raise hand" toggle, or
 * a moderator's invitation with "Join the stage" / "Not now"; on stage "Leave the stage";
 * what a moderator did to us. `render()` redraws it from the call.
 */
export function stageControls(ctx, call, { gid, rid, moderator }) {
  const el = h('div', { class: 'stage-controls', testid: 'stage-controls', 'aria-live': 'polite' });
  const stage = call.stage;
  // Built once: a redraw puts the same buttons back, so the one in focus keeps it.
  const hand = h('button', { class: 'btn', type: 'button', testid: 'stage-hand', onclick: () => stage.raiseHand(!(stage.seat && stage.seat.hand)) });
  const accept = h('button', { class: 'btn btn-primary', type: 'button', testid: 'stage-accept', onclick: () => stage.answer(true) }, 'Join the stage');
  const decline = h('button', { class: 'btn', type: 'button', testid: 'stage-decline', onclick: () => stage.answer(false) }, 'Not now');
  const leave = h('button', { class: 'btn', type: 'button', testid: 'stage-leave', onclick: () => stage.leaveStage() }, 'Leave the stage');
  const back = h('button', { class: 'btn', type: 'button', testid: 'stage-back', onclick: () => stage.backOnStage() }, 'Back on stage');
  let shown = '';

  function render() {
    const here = call.inRoom(gid, rid);
    const seat = here && stage.active ? stage.seat : null;
    const did = stage.moderation && stage.moderation.group === gid && stage.moderation.room === rid ? stage.moderation : null;
    // After a mute: until they unmute. After a removal: until they join again.
    const said = did && ((did.action === 'mute' && here && call.muted) || (did.action === 'remove' && !here)) ? moderationText(did, ctx.show) : '';
    const by = stage.invitedBy ? ctx.show(stage.invitedBy) : 'A moderator';
    const mod = moderator();
    const key = JSON.stringify([seat, said, seat && seat.invited ? by : null, mod, stage.comingBack]);
    if (key === shown) return;
    shown = key;
    const focused = el.contains(document.activeElement) ? document.activeElement : null;
    const moderated = said ? h('p', { class: 'stage-moderated', testid: 'stage-moderated', role: 'status' }, said) : null;
    const role = (place, text) => h('p', { class: 'stage-role', testid: 'stage-role', dataset: { place } }, text);
    if (!seat) replaceChildren(el, moderated);
    else if (seat.speaker) {
      replaceChildren(el, role('speaker', 'You are on stage: everyone in the call hears you.'), h('div', { class: 'button-row' }, leave), moderated);
    } else if (seat.invited && stage.comingBack) {
      replaceChildren(el, role('audience', 'Going back on stage…'), moderated);
    } else if (seat.invited) {
      replaceChildren(el, role('audience', 'You are in the audience: your microphone is off.'),
        h('div', { class: 'stage-invitation', testid: 'stage-invitation', role: 'group', 'aria-label': 'Invitation to speak' },
          h('p', { class: 'stage-invitation-text', testid: 'stage-invitation-text' }, `${by} invites you to speak.`),
          h('p', { class: 'hint' }, 'Joining the stage turns your microphone on: everyone in the call hears you.'),
          h('div', { class: 'button-row' }, accept, decline)),
        moderated);
    } else {
      hand.textContent = seat.hand ? 'Lower hand' : 'Raise hand';
      hand.setAttribute('aria-pressed', String(seat.hand));
      // A moderator who stepped down goes back by themselves; others ask.
      replaceChildren(el, role('audience', 'You are in the audience: your microphone is off.'), h('div', { class: 'button-row' }, mod ? back : hand),
        seat.hand && !mod ? h('p', { class: 'hint' }, 'Your hand is up: a moderator may invite you to speak.') : null, moderated);
    }
    // Keep the focus in here: on the same button, else on the first one now shown.
    if (focused) (el.contains(focused) ? focused : el.querySelector('button') || el).focus();
  }

  return { el, render };
}

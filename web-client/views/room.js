//! The room view: start/join/leave the call, mute, push-to-talk, microphone choice, and the
//! participants with a live speaking indicator, connection state, the path their audio takes
//! (direct, relayed, or through the node's audio server), words when the network keeps
//! someone out, per-person volume, and a line saying honestly how the audio travels.
//! A stage room lists who is on stage apart from the audience, with the stage controls
//! (views/stage.js); mute, push-to-talk and the microphone are offered only on stage.

import { h, link, replaceChildren, uid } from '../dom.js';
import { notFound } from './notfound.js';
import { loadVolume, SPEAKING_LEVEL } from '../audio.js';
import { isModerator, splitStage, fillActions, audienceList, stageControls } from './stage.js';

const STATE_LABEL = {
  new: 'Connecting',
  connecting: 'Connecting',
  connected: 'Connected',
  disconnected: 'Reconnecting',
  failed: 'Failed — retrying',
  closed: 'Closed',
  unreachable: "Can't connect",
};

const PATH_TITLE = {
  direct: 'The audio goes straight between your browsers.',
  relayed: 'The audio goes through a relay (TURN server): the network allows no direct path.',
  node: "The audio goes through this node's audio server.",
};
const PATH_TEXT = { node: 'via node' };

const TRANSPORT = {
  sfu: 'Audio goes through this node: encrypted between you and the node, not end to end.',
  mesh: 'Audio goes straight between browsers (encrypted in transit).',
};
/** The same with end-to-end encryption on (e2ee/): no node can hear it. */
const TRANSPORT_E2EE = {
  sfu: 'Audio goes through this node, encrypted end to end: the node forwards it but cannot hear it.',
  mesh: 'Audio goes straight between browsers, encrypted end to end.',
};
const SAFETY_HINT = 'Read this code to each other: if yours differ, a node swapped keys and may be listening.';

export function mount(root, ctx, { gid, rid }) {
  const call = ctx.call;
  const page = h('section', { class: 'page room' }, h('p', { class: 'muted' }, 'Loading…'));
  root.append(page);
  let built = false;
  let gone = false;

  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' });
  const title = h('h1', { testid: 'room-title' });
  const summary = h('p', { class: 'muted', testid: 'room-summary', 'aria-live': 'polite' });
  const controls = h('div', { class: 'call-controls' });
  const people = h('ul', { class: 'participants', testid: 'participant-list', 'aria-label': 'People in the call' });
  const rows = new Map(); // session → {li, state, level, slider}

  const joinBtn = h('button', { class: 'btn btn-primary btn-big', type: 'button', testid: 'call-join' }, 'Start call');
  joinBtn.addEventListener('click', () => call.join(gid, rid, { stage: isStage() }));
  const leaveBtn = h('button', { class: 'btn btn-danger btn-big', type: 'button', testid: 'call-leave' }, 'Leave');
  leaveBtn.addEventListener('click', () => {
    call.leave();
    joinBtn.focus();
  });
  const muteBtn = h('button', { class: 'btn btn-big', type: 'button', testid: 'call-mute', 'aria-pressed': 'false' }, 'Mute');
  muteBtn.addEventListener('click', () => call.setMuted(!call.muted));

  const micId = uid('mic');
  const micSelect = h('select', { id: micId, testid: 'mic-select' });
  micSelect.addEventListener('change', () => call.voice.selectMicrophone(micSelect.value));
  const micField = h('div', { class: 'field' }, h('label', { for: micId }, 'Microphone'), micSelect);

  const pttId = uid('ptt');
  const pttBox = h('input', { id: pttId, type: 'checkbox', testid: 'ptt-toggle', checked: call.pushToTalk, 'aria-describedby': `${pttId}-hint` });
  pttBox.addEventListener('change', () => call.voice.setPushToTalk(pttBox.checked));
  const pttField = h(
    'div',
    { class: 'field check' },
    pttBox,
    h('label', { for: pttId }, 'Push to talk'),
    h('p', { class: 'hint', id: `${pttId}-hint` }, 'Hold Space to talk; the microphone is muted otherwise.'),
  );
  const transport = h('p', { class: 'hint transport', testid: 'call-transport' });
  const meterId = uid('meter');
  const localMeter = h('span', { class: 'meter', role: 'meter', 'aria-labelledby': meterId, 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' }, h('span', { class: 'meter-fill' }));
  const localMeterField = h('span', { class: 'meter-field', testid: 'local-meter' }, h('span', { class: 'meter-label', id: meterId }, 'Your level'), localMeter);
  // Push to talk needs a Space key: offered only where there is likely a keyboard.
  const hasKeyboard = () => !(window.matchMedia && window.matchMedia('(pointer: coarse)').matches && !window.matchMedia('(any-hover: hover)').matches);
  // The microphone's settings: after the people on a phone, beside the call's controls on
  // a wide screen.
  const settingsBody = h('div', { class: 'stack' });
  const settingsCard = h('div', { class: 'card room-settings', testid: 'call-settings' }, h('h2', { class: 'card-title' }, 'Your microphone'), settingsBody);
  function renderSettings(fields) {
    const shown = fields.filter(Boolean);
    settingsCard.hidden = !shown.length;
    replaceChildren(settingsBody, shown);
  }

  const group = () => ctx.state.groups.get(gid);
  // An earlier session of this tab (before a reconnect) stays listed until the node times it out.
  const listed = () => ctx.participants(gid, rid).filter((p) => !call.formerSessions.has(p.session));
  const room = () => (group() && group().rooms ? group().rooms.find((r) => r.id === rid) : null);
  const isStage = () => !!(room() && room().stage);
  const audience = audienceList(ctx, call);
  const stageBox = stageControls(ctx, call, { gid, rid, moderator: () => isModerator(group()) });
  const stageHint = h('p', { class: 'hint', testid: 'stage-hint' });
  const stageCount = h('span', { testid: 'speaker-count' }, '0');

  function build() {
    built = true;
    const peopleCard = isStage()
      ? h('div', { class: 'card' },
          h('div', { class: 'stage-section', testid: 'stage-speakers' }, h('h2', { class: 'card-title stage-title' }, 'On stage (', stageCount, ')'), people),
          audience.el)
      : h('div', { class: 'card' }, h('h2', { class: 'card-title' }, 'In the call'), people);
    replaceChildren(
      page,
      h('div', { class: 'page-head' }, crumbs, h('div', { class: 'title-row' }, title, isStage() ? h('span', { class: 'badge stage-badge', testid: 'room-stage' }, 'Stage') : null), summary),
      h('div', { class: 'columns room-columns' },
        h('div', { class: 'stack room-main' }, h('div', { class: 'card room-call' }, h('h2', { class: 'card-title' }, 'Call'), controls), settingsCard),
        peopleCard),
    );
  }

  function renderHead() {
    const g = group();
    const r = room();
    replaceChildren(crumbs, link('/', {}, 'My groups'), h('span', { 'aria-hidden': 'true' }, ' / '), link(`/g/${gid}`, { testid: 'room-group-link' }, g.name));
    title.textContent = r.name;
    document.title = `${r.name} · ${g.name} · VoiceChat`;
  }

  /** Which set of controls the Call card shows (rebuilt only when it changes). */
  function layoutOf(here) {
    if (!here) return 'out';
    if (call.status === 'joining') return 'joining';
    if (!call.stage.active) return 'talk';
    return call.stage.mayTalk ? 'speaker' : 'listener';
  }

  function renderControls() {
    const list = listed();
    const here = call.inRoom(gid, rid);
    const others = list.filter((p) => p.session !== call.mySession);
    // A big room whose call this tab is not in comes as a count only.
    const count = ctx.participantsListed(gid, rid) ? list.length : ctx.participantCount(gid, rid);
    if (!count) summary.textContent = 'Nobody is in the call yet';
    else if (isStage() && ctx.participantsListed(gid, rid)) {
      const { speakers, audience: listeners } = splitStage(list);
      summary.textContent = `${speakers.length} on stage, ${listeners.length} listening`;
    } else summary.textContent = `${count} ${count === 1 ? 'person' : 'people'} in the call`;
    const layout = layoutOf(here);
    const fresh = controls.dataset.layout !== layout || layout === 'out';
    controls.dataset.layout = layout;
    if (layout === 'out') {
      joinBtn.textContent = others.length || count > list.length ? 'Join' : 'Start call';
      joinBtn.disabled = false;
      const elsewhere = call.status !== 'idle' ? h('p', { class: 'hint' }, 'Joining leaves the call you are in now.') : null;
      // The microphone is opened on this page so that Join is quick: say so.
      const ready = call.micReady(gid, rid)
        ? h('p', { class: 'hint mic-ready', testid: 'mic-ready' }, h('span', { class: 'mic-dot', 'aria-hidden': 'true' }), 'Your microphone is on and ready; nothing is sent until you join.')
        : null;
      stageHint.textContent = isModerator(group()) ? 'A stage: you moderate it, and join on stage.' : 'A stage: you join in the audience, with your microphone off. Raise your hand to ask to speak.';
      replaceChildren(controls, h('div', { class: 'button-row' }, joinBtn), elsewhere, ready, isStage() ? [stageHint, stageBox.el] : null);
      renderSettings([isStage() || !hasKeyboard() ? null : pttField]);
    } else if (layout === 'joining') {
      joinBtn.textContent = 'Connecting…';
      joinBtn.disabled = true;
      replaceChildren(controls, h('div', { class: 'button-row' }, joinBtn, leaveBtn));
    } else if (fresh && layout === 'listener') {
      replaceChildren(controls, h('div', { class: 'button-row' }, leaveBtn), stageBox.el, transport);
      renderSettings([]);
    } else if (fresh) {
      replaceChildren(controls, h('div', { class: 'button-row' }, muteBtn, leaveBtn, localMeterField), layout === 'speaker' ? stageBox.el : null, transport);
      renderSettings([micField, hasKeyboard() ? pttField : null]);
      fillMics();
    }
    stageBox.render();
    if (here && layout !== 'joining') {
      renderMute();
      renderTransport();
    }
  }

  /** How the audio travels (through the node or between browsers), whether end to end, and
   *  the safety code people compare. */
  function renderTransport() {
    const e2ee = call.keys.status();
    const mode = call.mode === 'sfu' ? 'sfu' : 'mesh';
    let text = (e2ee.on ? TRANSPORT_E2EE : TRANSPORT)[mode];
    if (!e2ee.on && mode === 'sfu' && e2ee.why) text = text.replace(/\.$/, ` (${e2ee.why}).`);
    // People of other nodes: through their own node too (the cascade), or straight between
    // browsers while their node is not linked with this one.
    const others = mode === 'sfu' ? listed().filter((p) => p.session !== call.mySession && !call.sameNode(p.user)) : [];
    if (others.some((p) => !call.viaNode(p.user))) text += ' With people of other nodes it goes straight between browsers.';
    else if (others.length) text += e2ee.on ? ' People of other nodes come through their own node too, which cannot hear it either.' : ' People of other nodes come through their own node too.';
    const code = e2ee.on && e2ee.code;
    const shown = code ? `${text} Safety code: ${code}` : text;
    if (transport.dataset.shown !== shown) {
      transport.dataset.shown = shown;
      replaceChildren(
        transport,
        text,
        code ? h('span', { class: 'safety-code', testid: 'safety-code', title: SAFETY_HINT, 'data-code': code }, ' Safety code: ', h('strong', {}, code)) : null,
      );
    }
    transport.dataset.mode = mode;
    transport.dataset.e2ee = String(e2ee.on);
  }

  function renderMute() {
    const muted = call.effectiveMuted;
    muteBtn.textContent = call.muted ? 'Unmute' : 'Mute';
    muteBtn.setAttribute('aria-pressed', String(call.muted));
    muteBtn.disabled = call.pushToTalk;
    muteBtn.title = call.pushToTalk ? 'Push to talk is on: hold Space to talk' : '';
    muteBtn.classList.toggle('is-muted', muted);
    pttBox.checked = call.pushToTalk;
  }

  async function fillMics() {
    const mics = await call.voice.microphones();
    const track = call.localStream && call.localStream.getAudioTracks()[0];
    const current = track && track.getSettings ? track.getSettings().deviceId : call.voice.deviceId;
    replaceChildren(
      micSelect,
      mics.length
        ? mics.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === current }, d.label || `Microphone ${i + 1}`))
        : h('option', { value: '' }, 'Default microphone'),
    );
  }

  function renderPeople() {
    let list = listed();
    const seen = new Set();
    // On a stage, moderators act on others, from inside the call (the node acts on their call).
    const moderate = isStage() && isModerator(group()) && call.inRoom(gid, rid) && call.status === 'joined';
    if (isStage()) {
      const split = splitStage(list);
      audience.render(split.audience, moderate);
      stageCount.textContent = String(split.speakers.length);
      list = split.speakers;
    }
    if (!list.length) {
      for (const row of rows.values()) row.li.remove();
      rows.clear();
      const count = ctx.participantsListed(gid, rid) ? 0 : ctx.participantCount(gid, rid);
      const text = count
        ? `${count} ${count === 1 ? 'person is' : 'people are'} in this call: too many to list here. Join to see everyone.`
        : isStage()
          ? 'Nobody is on stage.'
          : 'Nobody is here. Start the call and others can join.';
      const empty = people.querySelector('.empty-row');
      if (!empty || empty.textContent !== text) replaceChildren(people, h('li', { class: 'empty-row muted' }, text));
      return;
    }
    const empty = people.querySelector('.empty-row');
    if (empty) empty.remove();
    for (const p of list) {
      seen.add(p.session);
      const self = p.session === call.mySession;
      let row = rows.get(p.session);
      if (!row) {
        row = makeRow(p, self);
        rows.set(p.session, row);
      }
      people.append(row.li); // keeps server order
      row.muted.hidden = !p.muted;
      row.li.classList.toggle('is-muted', !!p.muted);
      if (isStage()) fillActions(row.actions, ctx, call, p, moderate && !self);
    }
    for (const [session, row] of [...rows]) {
      if (!seen.has(session)) {
        row.li.remove();
        rows.delete(session);
      }
    }
    renderPeers();
  }

  function makeRow(p, self) {
    const name = ctx.show(p.user);
    const volId = uid('vol');
    const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' }, (name[0] || '?').toUpperCase());
    const speaking = h('span', { class: 'sr-only speaking-text' }, '');
    const muted = h('span', { class: 'badge muted-badge', title: 'Muted' }, 'Muted');
    const state = self ? null : h('span', { class: 'badge state', testid: `peer-state-${p.user}`, dataset: { state: 'new' } }, 'Waiting');
    const path = self ? null : h('span', { class: 'path', testid: `path-${p.user}`, hidden: true });
    const failed = self ? null : h('p', { class: 'peer-failed', testid: `peer-failed-${p.user}`, hidden: true });
    const actions = h('span', { class: 'row-actions', hidden: true });
    let slider = null;
    let volume = null;
    if (!self) {
      slider = h('input', { id: volId, type: 'range', min: 0, max: 100, step: 1, value: String(Math.round(loadVolume(p.user) * 100)), testid: `volume-${p.user}` });
      slider.addEventListener('input', () => call.speakers.setVolume(p.user, Number(slider.value) / 100));
      // Mute someone for yourself only (the others still hear them).
      const silenced = call.speakers.isSilenced(p.user);
      const hush = h('button', { class: 'btn btn-quiet btn-small', type: 'button', testid: `person-mute-${p.user}`, 'aria-pressed': String(silenced), 'aria-label': `Mute ${name} for you` }, silenced ? 'Unmute' : 'Mute');
      hush.addEventListener('click', () => {
        const on = !call.speakers.isSilenced(p.user);
        call.speakers.silence(p.user, on);
        hush.textContent = on ? 'Unmute' : 'Mute';
        hush.setAttribute('aria-pressed', String(on));
        hush.setAttribute('aria-label', `${on ? 'Unmute' : 'Mute'} ${name} for you`);
      });
      volume = h('span', { class: 'volume' }, h('label', { for: volId, class: 'sr-only' }, `Volume of ${name}`), h('span', { class: 'volume-icon', 'aria-hidden': 'true' }), slider, hush);
    }
    const li = h(
      'li',
      { class: `participant${self ? ' is-self' : ''}`, testid: `participant-${p.user}`, dataset: { session: p.session, user: p.user, speaking: 'false' } },
      h('span', { class: 'who' }, avatar, h('span', { class: 'name', testid: `participant-name-${p.user}` }, ctx.label(p.user), self ? h('span', { class: 'muted' }, ' (you)') : null), speaking, muted),
      self ? null : h('span', { class: 'connection' }, state, path),
      volume,
      failed,
      actions,
    );
    return { li, avatar, speaking, muted, state, path, failed, slider, self, actions };
  }

  function renderPeers() {
    for (const [session, row] of rows) {
      if (row.self || !row.state) continue;
      const info = call.peerInfo(session, row.li.dataset.user);
      const here = call.inRoom(gid, rid);
      const unreachable = here && !!info && call.unreachable(session);
      const state = here ? (unreachable ? 'unreachable' : info ? info.state : 'new') : null;
      row.state.hidden = state === null;
      if (state !== null && row.state.dataset.state !== state) {
        row.state.dataset.state = state;
        row.state.textContent = STATE_LABEL[state] || state;
      }
      if (row.slider) row.slider.disabled = state === null;
      const words = unreachable ? call.unreachableText(info.user) : '';
      row.failed.hidden = !unreachable;
      if (row.failed.textContent !== words) row.failed.textContent = words;
    }
    renderPaths();
  }

  /** "direct" / "relayed" next to each connected person (polled from getStats by the call). */
  function renderPaths() {
    for (const [session, row] of rows) {
      if (row.self || !row.path) continue;
      const info = call.inRoom(gid, rid) ? call.pathOf(session, row.li.dataset.user) : null;
      const text = info ? PATH_TEXT[info.path] || info.path : '';
      row.path.hidden = !info;
      if (row.path.textContent !== text) {
        row.path.textContent = text;
        row.path.dataset.path = info ? info.path : '';
        const how = info && info.path === 'relayed' && info.protocol ? ` (${info.protocol.toUpperCase()})` : '';
        row.path.title = info ? `${PATH_TITLE[info.path]}${how}` : '';
      }
    }
  }

  function renderLevels() {
    for (const [session, row] of rows) {
      const level = row.self ? call.levels.get('local') || 0 : call.levels.get(session) || 0;
      const speaking = level > SPEAKING_LEVEL && call.inRoom(gid, rid);
      if ((row.li.dataset.speaking === 'true') !== speaking) {
        row.li.dataset.speaking = String(speaking);
        row.speaking.textContent = speaking ? 'speaking' : '';
      }
    }
    const local = Math.min(1, call.levels.get('local') || 0);
    localMeter.firstChild.style.width = `${Math.round(local * 100)}%`;
    localMeter.setAttribute('aria-valuenow', String(Math.round(local * 100)));
  }

  function render() {
    const g = group();
    if (!g || !g.members) return;
    if (!room()) {
      gone = true;
      replaceChildren(page, notFound('Room not found', 'This room does not exist, or was deleted.'));
      return;
    }
    if (!built) build();
    renderHead();
    renderControls();
    renderPeople();
  }

  (async () => {
    try {
      await ctx.loadGroup(gid);
      render();
      if (gone || !room()) return;
      // Back in the call this tab was in before a reload (or by the room's URL); otherwise
      // get everything ready so that Join only has to signal.
      if (call.status === 'idle' && call.wasIn(gid, rid)) call.join(gid, rid, { stage: isStage() });
      else if (call.status === 'idle') call.prepare(gid, rid, { stage: isStage() });
    } catch (err) {
      if (err.status === 404 || err.status === 400) {
        gone = true;
        replaceChildren(page, notFound('Not found', 'This room does not exist, or you are not a member of its group.'));
      } else ctx.showError(err);
    }
  })();

  return {
    update(kind, data) {
      if (gone) return;
      if (kind === 'group_removed' && data.group === gid) {
        gone = true;
        replaceChildren(page, notFound('Group not found', 'This group was deleted, or you were removed from it.'));
        return;
      }
      if (kind === 'group' && data.group === gid) render();
      else if (kind === 'participants' && data.group === gid && data.room === rid) render();
      else if (kind === 'call') {
        if (!built) return;
        if (data.what === 'levels') renderLevels();
        else if (data.what === 'peers') renderPeers();
        else if (data.what === 'cascade') {
          renderPeers();
          renderTransport();
        }
        else if (data.what === 'paths') renderPaths();
        else if (data.what === 'e2ee') renderTransport();
        else if (data.what === 'mute') {
          renderMute();
          stageBox.render();
        }
        else {
          renderControls();
          renderPeople();
          renderLevels();
        }
      }
    },
    unmount() {
      document.title = 'VoiceChat';
      call.unprepare(gid, rid);
    },
  };
}

//! The header strip shown while this tab is in a call (on any other page than the call's
//! room, whose own controls say the same): where, mute (not for a stage's listener), leave.

import { h, link, replaceChildren } from '../dom.js';

export function mountCallbar(el, ctx, subscribe) {
  const call = ctx.call;
  function render() {
    // On the call's own room page its big controls are there: not twice.
    if (call.status === 'idle' || location.pathname === `/g/${call.group}/r/${call.room}`) {
      el.hidden = true;
      el.textContent = '';
      return;
    }
    const g = ctx.state.groups.get(call.group);
    const r = g && g.rooms ? g.rooms.find((x) => x.id === call.room) : null;
    const where = r ? `${r.name}` : 'Call';
    el.hidden = false;
    replaceChildren(
      el,
      h('span', { class: 'live-dot', 'aria-hidden': 'true' }),
      link(`/g/${call.group}/r/${call.room}`, { class: 'callbar-room', testid: 'callbar-room' }, call.status === 'joining' ? `Connecting to ${where}…` : `In call: ${where}`),
      // A stage's listener sends nothing: there is nothing to mute.
      call.stage.mayTalk
        ? h('button', { class: 'btn btn-quiet btn-small', type: 'button', testid: 'callbar-mute', 'aria-pressed': String(call.muted), onclick: () => call.setMuted(!call.muted), disabled: call.pushToTalk }, call.muted ? 'Unmute' : 'Mute')
        : null,
      h('button', { class: 'btn btn-danger btn-small', type: 'button', onclick: () => call.leave() }, 'Leave'),
    );
  }
  subscribe((kind, data) => {
    if ((kind === 'call' && data.what !== 'levels' && data.what !== 'peers' && data.what !== 'paths') || kind === 'group' || kind === 'route') render();
  });
  render();
}

//! Shown for unknown paths, and reused by views for things that do not exist (or are hidden).

import { h, link } from '../dom.js';

export function notFound(title = 'Not found', text = 'There is nothing at this address.') {
  return h(
    'section',
    { class: 'card empty', testid: 'not-found' },
    h('h1', {}, title),
    h('p', { class: 'muted' }, text),
    link('/', { class: 'btn' }, 'Back to my groups'),
  );
}

export function mount(root) {
  root.append(notFound());
  return {};
}

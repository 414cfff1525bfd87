//! Small reusable pieces of UI: inline rename, confirm-then-act buttons, copy to clipboard.

import { h, uid } from '../dom.js';

/**
 * A "Rename" button that turns into a small form; `save(name)` returns a promise.
 * `editing()` tells whether the form is open (so a live re-render can wait).
 */
export function renameControl({ label, current, testid, save, onError }) {
  const box = h('span', { class: 'rename' });
  let open = false;
  const button = h('button', { class: 'btn btn-quiet', type: 'button', testid, 'aria-label': `Rename ${label}` }, 'Rename');
  button.addEventListener('click', () => {
    open = true;
    const id = uid('rename');
    const input = h('input', { id, value: current, maxlength: 64, required: true, testid: `${testid}-input` });
    const form = h(
      'form',
      { class: 'inline-form compact' },
      h('label', { for: id, class: 'sr-only' }, `New name for ${label}`),
      input,
      h('button', { class: 'btn btn-primary', type: 'submit', testid: `${testid}-save` }, 'Save'),
      h('button', { class: 'btn btn-quiet', type: 'button', onclick: close }, 'Cancel'),
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = input.value.trim();
      if (!name) return;
      try {
        await save(name);
        close();
      } catch (err) {
        onError(err);
        input.focus();
      }
    });
    form.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') close();
    });
    box.replaceChildren(form);
    input.focus();
    input.select();
  });
  function close() {
    open = false;
    box.replaceChildren(button);
    button.focus();
  }
  box.append(button);
  box.editing = () => open;
  return box;
}

/**
 * A button that asks first (window.confirm is keyboard- and screen-reader-friendly).
 * @param {{text: string, question: string, testid: string, danger?: boolean, action: () => any, onError: (err: any) => void, ariaLabel?: string}} opts
 */
export function confirmButton({ text, question, testid, danger = true, action, onError, ariaLabel }) {
  const btn = h('button', { class: `btn ${danger ? 'btn-danger' : ''}`, type: 'button', testid, 'aria-label': ariaLabel || null }, text);
  btn.addEventListener('click', async () => {
    if (question && !window.confirm(question)) return;
    btn.disabled = true;
    try {
      await action();
    } catch (err) {
      onError(err);
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

/**
 * A "⋯" menu holding a row's rarer and destructive actions (each still asks before it acts),
 * so a list is not a wall of red buttons. A native <details>: keyboard and screen-reader
 * friendly; Escape or a click elsewhere closes it.
 */
export function actionsMenu({ label, testid, items }) {
  const present = items.filter(Boolean);
  if (!present.length) return null;
  const menu = h('details', { class: 'menu', testid },
    h('summary', { class: 'btn btn-quiet', 'aria-label': `More actions for ${label}`, title: 'More actions' }, '⋯'),
    h('div', { class: 'menu-items', role: 'group', 'aria-label': `Actions for ${label}` }, present));
  menu.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && menu.open) {
      menu.open = false;
      menu.querySelector('summary').focus();
    }
  });
  document.addEventListener('click', (ev) => {
    if (menu.open && !menu.contains(ev.target)) menu.open = false;
  });
  return menu;
}

/** Copy text; falls back to selecting it on the page (an input, or any element's text)
 *  when the clipboard API is refused, so Ctrl+C copies it. */
export async function copyText(text, shown) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (shown && typeof shown.select === 'function') {
      shown.focus();
      shown.select();
    } else if (shown) {
      const range = document.createRange();
      range.selectNodeContents(shown);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    return false;
  }
}

export function formatExpiry(unixSecs) {
  if (!unixSecs) return 'never expires';
  const ms = unixSecs * 1000 - Date.now();
  if (ms <= 0) return 'expired';
  const hours = Math.round(ms / 3_600_000);
  if (hours < 48) return `expires in ${Math.max(1, hours)} h`;
  return `expires in ${Math.round(hours / 24)} days`;
}

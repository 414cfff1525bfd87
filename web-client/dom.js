//! Tiny DOM helpers: build elements without innerHTML, so names from the network are always text.

/**
 * h('button', {class: 'btn', onclick: fn, dataset: {testid: 'x'}}, 'Label', child, ...)
 * Attribute values of `false`/`null`/`undefined` are skipped; `true` sets an empty attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
    } else if (key === 'testid') {
      el.dataset.testid = value;
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `el` with `children`. */
export function replaceChildren(el, ...children) {
  el.textContent = '';
  append(el, children);
}

/** A short-lived unique id for label/for pairs. */
let counter = 0;
export function uid(prefix = 'id') {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** "bob@alpha" → {name: "bob", node: "alpha"}; `node` is null when alpha is this node. */
export function userParts(userId, localNode) {
  const at = userId.lastIndexOf('@');
  if (at <= 0) return { name: userId, node: null };
  const node = userId.slice(at + 1);
  return { name: displayNames.get(userId) || userId.slice(0, at), node: node === localNode ? null : node };
}

/** Display names people chose (any script), by user id, as the node's lists carry them. */
const displayNames = new Map();

/** Remember `userId`'s display name (`null` or empty: they have none, show the login name). */
export function learnName(userId, name) {
  if (typeof userId !== 'string') return;
  if (typeof name === 'string' && name) displayNames.set(userId, name);
  else if (name === null || name === '') displayNames.delete(userId);
}

/**
 * A login name from what someone typed: user names are a–z, 0–9, _ . - (they name people
 * across nodes, where look-alike letters would let one pass for another), so "José Zoë"
 * becomes "jose.zoe"; the typed form is their display name.
 */
export function loginName(typed) {
  return typed
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .trim()
    .replace(/\s+/g, '.')
    .replace(/[^a-z0-9_.-]/g, '')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 32);
}

/** "bob@alpha" → "bob" when alpha is this node; "carol@beta" → "carol · beta"; a display
 *  name in place of the login name when they chose one. */
export function displayUser(userId, localNode) {
  const { name, node } = userParts(userId, localNode);
  return node ? `${name} · ${node}` : name;
}

/** The same as displayUser, as nodes: the node part in its own (muted) span. */
export function userLabel(userId, localNode) {
  const { name, node } = userParts(userId, localNode);
  return node ? [name, h('span', { class: 'user-node', title: `A user of the node ${node}` }, ` · ${node}`)] : [name];
}

/** Navigation links handled by the router (set up in app.js). */
export function link(href, attrs, ...children) {
  return h('a', { href, 'data-route': '', ...attrs }, ...children);
}

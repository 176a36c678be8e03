// Small DOM helpers shared by every module. No framework: elements are built with `el`.

import { setText } from './i18n.js';

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/**
 * Build an element. `props`: `class`, `text` (plain text), `i18n` (a key, or [key, vars]),
 * `i18nAttr` ("aria-label:key;title:key"), `dataset` (object), any other attribute (true → "",
 * false/null/undefined → left out). Children: nodes or strings.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name === 'i18n') {
      if (Array.isArray(value)) setText(node, value[0], value[1]);
      else setText(node, value);
    } else if (name === 'i18nAttr') node.dataset.i18nAttr = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function show(node, visible = true) {
  if (node) node.hidden = !visible;
}

/** Run `fn` at most once per `ms`, after the calls stop. */
export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Say something to screen readers through the page's polite live region. */
export function announce(message, region = document.getElementById('live')) {
  if (!region) return;
  const line = document.createElement('p');
  line.textContent = message;
  region.append(line);
  setTimeout(() => line.remove(), 15000);
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

/** Save a Blob as a file: a temporary object URL behind a download link (a navigation, not a load). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: filename, class: 'visually-hidden' });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

/** Put text on the clipboard; falls back to a selected text area where the API is missing. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = el('textarea', { class: 'visually-hidden', readonly: true, 'aria-hidden': 'true' });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('copy failed');
}

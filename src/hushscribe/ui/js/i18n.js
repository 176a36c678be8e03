// Strings and formats. Every visible string comes from strings/<lang>.json through `t`.
//
// Static markup names its string with data-i18n="key" (text) and data-i18n-attr="attr:key;…"
// (attributes); data-i18n-vars holds the variables as JSON. Elements built in JS use the same
// attributes (see setText), so switching the language is one pass over the document.
// data-epoch="<seconds>" elements show a local date and time in the current language.

const STORAGE_KEY = 'hushscribe.lang';
export const LANGS = ['en', 'zh'];

let lang = 'en';
let strings = {};
const cache = new Map();
const listeners = new Set();

export function getLang() {
  return lang;
}

/** The locale for Intl formats: the browser's own English variant, zh-CN for Chinese. */
export function locale() {
  if (lang === 'zh') return 'zh-CN';
  const preferred = (navigator.languages || [navigator.language || 'en']).find((l) =>
    String(l).toLowerCase().startsWith('en'));
  return preferred || 'en';
}

/** The language to start with: the remembered choice, else the browser's first en/zh. */
export function initialLang() {
  let stored = null;
  try {
    stored = localStorage.getItem(STORAGE_KEY);
  } catch {
    stored = null;
  }
  if (LANGS.includes(stored)) return stored;
  for (const tag of navigator.languages || [navigator.language || '']) {
    const low = String(tag).toLowerCase();
    if (low.startsWith('zh')) return 'zh';
    if (low.startsWith('en')) return 'en';
  }
  return 'en';
}

async function load(code) {
  if (!cache.has(code)) {
    const url = new URL(`../strings/${code}.json`, import.meta.url);
    const response = await fetch(url, { credentials: 'same-origin' });
    if (!response.ok) throw new Error(`strings ${code}: HTTP ${response.status}`);
    cache.set(code, await response.json());
  }
  return cache.get(code);
}

/** Switch the language: load its strings, translate the document, tell the listeners. */
export async function setLang(code, { remember = false } = {}) {
  if (!LANGS.includes(code)) code = 'en';
  strings = await load(code);
  lang = code;
  document.documentElement.lang = code;
  if (remember) {
    try {
      localStorage.setItem(STORAGE_KEY, code);
    } catch {
      /* private mode: the choice lasts for this page only */
    }
  }
  applyI18n(document);
  for (const listener of listeners) listener(code);
}

export function onLangChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function has(key) {
  return Object.prototype.hasOwnProperty.call(strings, key);
}

function formatValue(value) {
  if (typeof value === 'number' && Number.isFinite(value)) {
    return new Intl.NumberFormat(locale(), { maximumFractionDigits: 1 }).format(value);
  }
  return String(value);
}

/**
 * The string `key` in the current language with {name} replaced from `vars`. With a numeric
 * `vars.count`, "key.one"/"key.other" (Intl plural rules) are preferred when they exist.
 */
export function t(key, vars = {}) {
  let text;
  if (typeof vars.count === 'number') {
    const form = new Intl.PluralRules(locale()).select(vars.count);
    text = strings[`${key}.${form}`] ?? strings[`${key}.other`];
  }
  if (text === undefined) text = strings[key];
  if (text === undefined) {
    console.warn(`hushscribe: no string for ${key}`);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(vars, name) ? formatValue(vars[name]) : whole);
}

function varsOf(node) {
  const raw = node.dataset.i18nVars;
  if (!raw) return {};
  try {
    return JSON.parse(raw);
  } catch {
    return {};
  }
}

/** Give `node` the text of `key` and remember the key, so a language switch translates it. */
export function setText(node, key, vars) {
  node.dataset.i18n = key;
  if (vars && Object.keys(vars).length) node.dataset.i18nVars = JSON.stringify(vars);
  else delete node.dataset.i18nVars;
  node.textContent = t(key, vars || {});
  return node;
}

/** setText(node, key, vars), or, without a key, an empty node that no language change refills. */
export function setTextOrClear(node, key, vars) {
  if (key) return setText(node, key, vars);
  node.textContent = '';
  delete node.dataset.i18n;
  delete node.dataset.i18nVars;
  return node;
}

/** Like setText for attributes: setAttrs(node, {'aria-label': 'key'}, vars). */
export function setAttrs(node, map, vars) {
  node.dataset.i18nAttr = Object.entries(map).map(([attr, key]) => `${attr}:${key}`).join(';');
  if (vars && Object.keys(vars).length) node.dataset.i18nVars = JSON.stringify(vars);
  translateAttrs(node);
  return node;
}

function translateAttrs(node) {
  const vars = varsOf(node);
  for (const pair of node.dataset.i18nAttr.split(';')) {
    const at = pair.indexOf(':');
    if (at < 1) continue;
    node.setAttribute(pair.slice(0, at).trim(), t(pair.slice(at + 1).trim(), vars));
  }
}

/** Translate `root` and everything in it that carries data-i18n, data-i18n-attr or data-epoch. */
export function applyI18n(root = document) {
  const pick = (selector) => {
    const found = Array.from(root.querySelectorAll(selector));
    if (root.matches && root.matches(selector)) found.unshift(root);
    return found;
  };
  for (const node of pick('[data-i18n]')) node.textContent = t(node.dataset.i18n, varsOf(node));
  for (const node of pick('[data-i18n-attr]')) translateAttrs(node);
  for (const node of pick('[data-epoch]')) node.textContent = formatDateTime(Number(node.dataset.epoch));
}

// --- formats -----------------------------------------------------------------------------------

export function formatNumber(value, options = {}) {
  return new Intl.NumberFormat(locale(), options).format(value);
}

/** Epoch seconds → a short local date and time ("12 Mar 2025, 14:05" / "2025年3月12日 14:05"). */
export function formatDateTime(epochSeconds) {
  if (!Number.isFinite(epochSeconds) || epochSeconds <= 0) return '—';
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' })
    .format(new Date(epochSeconds * 1000));
}

/** An element showing a date that follows language switches. */
export function dateNode(tag, epochSeconds, props = {}) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (Number.isFinite(epochSeconds) && epochSeconds > 0) {
    node.dataset.epoch = String(epochSeconds);
    node.textContent = formatDateTime(epochSeconds);
    const iso = new Date(epochSeconds * 1000).toISOString();
    if (tag === 'time') node.setAttribute('datetime', iso);
  } else {
    node.textContent = '—';
  }
  return node;
}

/** Seconds → "1:02:03" or "2:03" (`withHours` forces the hours). */
export function formatClock(seconds, withHours = false) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h > 0 || withHours ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

/** Bytes → "12.3 MB" with the unit from the strings file. */
export function formatBytes(bytes) {
  const n = Number(bytes) || 0;
  const units = [['unit.gb', 1e9], ['unit.mb', 1e6], ['unit.kb', 1e3]];
  for (const [key, size] of units) {
    if (n >= size) return t(key, { n: Math.round((n / size) * 10) / 10 });
  }
  return t('unit.bytes', { n });
}

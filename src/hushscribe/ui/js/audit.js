// The audit log, for auditors and administrators (scope audit:read): records oldest first with
// filters and a seq cursor ("Load more"), and a check of the whole log. The table is drawn again
// from the records already loaded when the language changes.

import { $, announce, el } from './dom.js';
import { get, post } from './api.js';
import { showError, showMessage } from './errors.js';
import { has, locale, onLangChange, setText, t } from './i18n.js';

export const EVENT_TYPES = [
  'login_ok', 'login_failed', 'logout', 'key_created', 'key_revoked', 'user_changed',
  'access_denied', 'upload', 'transcription_done', 'transcription_failed', 'result_read',
  'job_deleted', 'job_cancelled', 'speakers_renamed', 'settings_changed', 'model_imported',
  'model_removed', 'model_verify_failed', 'egress_blocked', 'service_start', 'service_stop',
  'audit_verified', 'audit_exported', 'checkpoint',
];
const OUTCOMES = ['ok', 'denied', 'failed'];
const DAMAGE_KINDS = [
  'modified', 'deleted', 'inserted', 'reordered', 'truncated', 'bad_mac', 'bad_signature',
  'missing_segment',
];
/** Who acted, when no user did (actor.method); and how a user authenticated. */
const NON_USERS = ['service', 'worker', 'cli'];
const METHODS = ['session', 'key', 'static_key', 'password', 'local', 'ldap'];
const PAGE = 100;
const HEX = /^[0-9a-f]{32,}$/i;
const LONG = 120;

/** The server's warnings we can say in the page's language; others are shown as they come. */
const WARNINGS = [
  [/^no HMAC key\b/, 'audit.warn.noHmac'],
  [/^checkpoints checked with the log's own\b/, 'audit.warn.ownPublicKey'],
  [/^no public key\b/, 'audit.warn.noPublicKey'],
  [/^no head\.json\b/, 'audit.warn.noHead'],
  [/^head\.json is not a checkpoint record\b/, 'audit.warn.badHead'],
  [/^no audit files\b/, 'audit.warn.noFiles'],
  [/^1 torn record at the end of (?<file>\S+) \(line (?<line>\d+)\)/, 'audit.warn.torn'],
  [/^(?<file>\S+) is empty \(a crash/, 'audit.warn.emptyFile'],
];

let records = null; // what the table shows, in log order
let query = null; // the filters of the last search (URLSearchParams), without the cursor
let lastSeq = null;
let hasMore = false;
let loading = false;
let report = null; // the last verification: {answer} or {error}

export function initAudit() {
  const type = $('#audit-type');
  type.append(el('option', { value: '', i18n: 'audit.typeAny' }));
  for (const name of EVENT_TYPES) type.append(el('option', { value: name, i18n: `audit.event.${name}` }));
  $('#audit-filters').addEventListener('submit', (event) => {
    event.preventDefault();
    search();
  });
  $('#audit-clear').addEventListener('click', () => {
    $('#audit-filters').reset();
    showError($('#audit-filters-error'), null);
    for (const input of [$('#audit-since'), $('#audit-until')]) input.removeAttribute('aria-invalid');
    search();
  });
  $('#audit-more').addEventListener('click', loadMore);
  $('#audit-verify').addEventListener('click', verifyLog);
  onLangChange(() => {
    if (records) {
      renderRows(records, true);
      renderCount();
    }
    if (report) renderReport();
  });
}

/** The place is opened: the first page with the filters as they are (once per page load). */
export function openAudit() {
  if (!records && !loading) search();
}

// --- filters and paging ------------------------------------------------------------------------

/** A datetime-local value (the browser's local time) as RFC 3339 in UTC; null when empty. */
function utc(input) {
  const value = input.value;
  if (!value) return null;
  const when = new Date(value); // a date-time without an offset is local time
  if (Number.isNaN(when.getTime())) return undefined;
  return when.toISOString();
}

function filters() {
  const params = new URLSearchParams();
  const since = utc($('#audit-since'));
  const until = utc($('#audit-until'));
  for (const [input, value] of [[$('#audit-since'), since], [$('#audit-until'), until]]) {
    if (value === undefined) {
      input.setAttribute('aria-invalid', 'true');
      showMessage($('#audit-filters-error'), 'audit.badTime');
      input.focus();
      return null;
    }
    input.removeAttribute('aria-invalid');
  }
  if (since && until && since >= until) {
    $('#audit-until').setAttribute('aria-invalid', 'true');
    showMessage($('#audit-filters-error'), 'audit.badSpan');
    $('#audit-until').focus();
    return null;
  }
  showError($('#audit-filters-error'), null);
  if (since) params.set('since', since);
  if (until) params.set('until', until);
  const actor = actorName($('#audit-actor').value.trim());
  if (actor) params.set('actor', actor);
  if ($('#audit-type').value) params.set('type', $('#audit-type').value);
  if ($('#audit-outcome').value) params.set('outcome', $('#audit-outcome').value);
  return params;
}

/** What the server calls who was typed: "Service"/"服务" → service, and so on; a user as typed. */
function actorName(typed) {
  const low = typed.toLowerCase();
  const alias = NON_USERS.find((name) => low === name || low === t(`audit.actor.${name}`).toLowerCase());
  return alias || typed;
}

async function fetchPage(params, after) {
  const ask = new URLSearchParams(params);
  ask.set('limit', String(PAGE));
  if (after !== null && after !== undefined) ask.set('after', String(after));
  return get(`/v1/audit?${ask}`);
}

function busy(on) {
  loading = on;
  $('#audit-table').setAttribute('aria-busy', on ? 'true' : 'false');
  $('#audit-search').disabled = on;
  $('#audit-more').disabled = on;
}

async function search() {
  const params = filters();
  if (!params) return;
  busy(true);
  try {
    const answer = await fetchPage(params, null);
    query = params;
    records = [];
    take(answer);
    renderRows(records, true);
    showError($('#audit-error'), null);
    renderCount();
    announce(records.length ? $('#audit-count').textContent : t('audit.empty'));
  } catch (error) {
    showError($('#audit-error'), error);
  } finally {
    busy(false);
  }
}

async function loadMore() {
  if (!query || !hasMore || loading) return;
  busy(true);
  try {
    const answer = await fetchPage(query, lastSeq);
    const before = records.length;
    const fresh = take(answer);
    renderRows(fresh, false);
    showError($('#audit-error'), null);
    renderCount();
    announce(t('audit.loadedMore', { count: records.length - before }));
    // Keyboard users go on where the new rows begin.
    const first = $('#audit-table tbody').rows[before];
    if (first) first.querySelector('.audit-seq').focus();
  } catch (error) {
    showError($('#audit-error'), error);
  } finally {
    busy(false);
  }
}

/** Keep an answer's records and cursor; the new records. */
function take(answer) {
  const data = (answer && Array.isArray(answer.data)) ? answer.data : [];
  records.push(...data);
  hasMore = Boolean(answer && answer.has_more);
  lastSeq = answer && answer.last_seq !== undefined ? answer.last_seq : lastSeq;
  return data;
}

function renderCount() {
  const count = records.length;
  $('#audit-empty').hidden = count > 0;
  $('#audit-more').hidden = !hasMore;
  const node = $('#audit-count');
  if (!count) node.textContent = '';
  else setText(node, hasMore ? 'audit.countMore' : 'audit.count', { count });
}

// --- the table ---------------------------------------------------------------------------------

/** An RFC 3339 time (microseconds and all) → a local date and time with seconds. */
function localTime(text) {
  if (typeof text !== 'string') return '—';
  const trimmed = text.replace(/(\.\d{3})\d+/, '$1');
  const when = new Date(trimmed);
  if (Number.isNaN(when.getTime())) return text;
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'medium' }).format(when);
}

function timeNode(text) {
  const node = el('time', { text: localTime(text) });
  if (typeof text === 'string') node.setAttribute('datetime', text);
  return node;
}

function eventLabel(type) {
  return EVENT_TYPES.includes(type) ? t(`audit.event.${type}`) : String(type || '—');
}

/** Data from the record, as it is (not the page's words): marked so, and never translated. */
function value(text, className = '') {
  return el('code', { class: `audit-value${className ? ` ${className}` : ''}`, translate: 'no', text });
}

function actorCell(actor) {
  const who = actor && typeof actor === 'object' ? actor : {};
  const parts = [];
  if (who.user) {
    // The name as the log holds it (a user, or e.g. "first-run"): data, not the page's words.
    parts.push(el('strong', { class: 'audit-user audit-value', translate: 'no', text: who.user }));
  } else if (NON_USERS.includes(who.method)) {
    parts.push(el('span', { class: 'audit-user', text: t(`audit.actor.${who.method}`) }));
  } else {
    parts.push(el('span', { class: 'muted', text: '—' }));
  }
  const how = [];
  if (who.user && who.method) {
    if (METHODS.includes(who.method)) how.push(el('span', { text: t(`audit.method.${who.method}`) }));
    else if (NON_USERS.includes(who.method)) how.push(el('span', { text: t(`audit.actor.${who.method}`) }));
    else how.push(value(String(who.method)));
  }
  if (who.key_id) how.push(el('span', { text: t('audit.keyId') }), value(String(who.key_id)));
  if (how.length) parts.push(el('span', { class: 'audit-how' }, how));
  return parts;
}

function outcomeCell(outcome) {
  const known = OUTCOMES.includes(outcome);
  return el('span', {
    class: `audit-outcome audit-outcome-${known ? outcome : 'other'}`,
    text: known ? t(`audit.outcome.${outcome}`) : String(outcome || '—'),
  });
}

function valueText(raw) {
  if (raw === null || raw === undefined) return '—';
  if (typeof raw === 'boolean') return t(raw ? 'audit.yes' : 'audit.no');
  if (typeof raw === 'number') return String(raw);
  if (Array.isArray(raw)) return raw.length ? raw.map(valueText).join(', ') : '—';
  if (typeof raw === 'object') {
    return Object.entries(raw).map(([k, v]) => `${k}=${valueText(v)}`).join(', ');
  }
  const text = String(raw);
  if (HEX.test(text)) return `${text.slice(0, 12)}…`;
  return text.length > LONG ? `${text.slice(0, LONG)}…` : text;
}

function detailsCell(details) {
  if (!details || typeof details !== 'object' || !Object.keys(details).length) {
    return el('span', { class: 'muted', text: '—' });
  }
  const list = el('ul', { class: 'audit-details' });
  for (const [name, raw] of Object.entries(details)) {
    const label = has(`audit.detail.${name}`)
      ? el('span', { class: 'audit-key', text: t(`audit.detail.${name}`) })
      : value(name, 'audit-key');
    // Yes/no is the page's word; everything else is the record's own data.
    const shown = typeof raw === 'boolean'
      ? el('span', { class: 'audit-flag', text: valueText(raw) })
      : value(valueText(raw));
    list.append(el('li', {}, label, el('span', { class: 'audit-sep', text: t('audit.colon') }), shown));
  }
  return list;
}

function row(record) {
  const seq = record.seq;
  return el('tr', { dataset: { seq: String(seq ?? ''), type: String(record.type || ''), outcome: String(record.outcome || '') } },
    el('td', { class: 'num' }, el('span', { class: 'audit-seq', tabindex: '-1', text: String(seq ?? '—') })),
    el('td', { class: 'audit-time' }, timeNode(record.time)),
    el('td', { class: 'audit-event' }, eventLabel(record.type)),
    el('td', {}, actorCell(record.actor)),
    el('td', {}, record.address ? value(String(record.address)) : el('span', { class: 'muted', text: '—' })),
    el('td', { class: 'audit-target' }, record.target ? value(valueText(String(record.target))) : el('span', { class: 'muted', text: '—' })),
    el('td', {}, outcomeCell(record.outcome)),
    el('td', {}, detailsCell(record.details)));
}

function renderRows(list, replace) {
  const body = $('#audit-table tbody');
  const fragment = document.createDocumentFragment();
  for (const record of list) fragment.append(row(record));
  if (replace) body.replaceChildren(fragment);
  else body.append(fragment);
  $('#audit-wrap').hidden = !records.length;
}

// --- verification ------------------------------------------------------------------------------

async function verifyLog() {
  const button = $('#audit-verify');
  button.disabled = true;
  const result = $('#audit-verify-result');
  result.className = 'audit-verify-result';
  result.replaceChildren(setText(el('p'), 'audit.verifying'));
  try {
    report = { answer: await post('/v1/audit/verify', {}) };
  } catch (error) {
    report = { error };
  } finally {
    button.disabled = false;
  }
  renderReport();
}

function warningNode(text) {
  for (const [pattern, key] of WARNINGS) {
    const m = pattern.exec(text);
    if (m) return el('li', { text: t(key, { ...(m.groups || {}) }) });
  }
  return el('li', { lang: 'en', class: 'server-text', text });
}

function renderReport() {
  const result = $('#audit-verify-result');
  result.className = 'audit-verify-result';
  if (report.error) {
    const alert = el('div', { class: 'alert', role: 'alert' });
    showError(alert, report.error);
    result.replaceChildren(alert);
    return;
  }
  const answer = report.answer || {};
  const parts = [];
  const span = {
    records: Number(answer.records) || 0,
    checkpoints: Number(answer.checkpoints) || 0,
    files: Number(answer.files) || 0,
    first: localTime(answer.first_time),
    last: localTime(answer.last_time),
  };
  if (answer.ok) {
    result.classList.add('audit-verify-ok');
    parts.push(el('p', { class: 'audit-verdict' },
      el('span', { class: 'audit-verdict-mark', 'aria-hidden': 'true', text: '✓ ' }),
      span.records
        ? t('audit.intact', { ...span, count: span.records, checkpoints: t('audit.checkpoints', { count: span.checkpoints }) })
        : t('audit.intactEmpty')));
  } else {
    result.classList.add('audit-verify-bad');
    const damage = answer.damage || {};
    const kind = DAMAGE_KINDS.includes(damage.kind) ? t(`audit.damage.${damage.kind}`) : String(damage.kind || '?');
    const vars = { kind, file: damage.file || '—', seq: damage.seq ?? '—' };
    const alert = el('div', { class: 'alert', role: 'alert' },
      el('span', { text: t(damage.seq === null || damage.seq === undefined ? 'audit.damagedNoSeq' : 'audit.damaged', vars) }),
      damage.detail ? el('span', { class: 'error-detail server-text', lang: 'en', text: damage.detail }) : null);
    parts.push(alert);
    if (span.records) parts.push(el('p', { class: 'hint', text: t('audit.checkedSoFar', span) }));
  }
  const warnings = Array.isArray(answer.warnings) ? answer.warnings : [];
  if (warnings.length) {
    parts.push(el('p', { class: 'audit-warnings-title', text: t('audit.warnings', { count: warnings.length }) }),
      el('ul', { class: 'audit-warnings' }, warnings.map((w) => warningNode(String(w)))));
  }
  result.replaceChildren(...parts);
}

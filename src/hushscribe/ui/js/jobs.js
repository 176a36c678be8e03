// My jobs: a table that follows the queue. It asks GET /v1/jobs every 1.5 s while a job is queued
// or running (slower otherwise, slowest in a background tab) and changes rows in place, so that
// focus and scroll stay where they are; status changes are read out through an aria-live region.

import { $, announce, el } from './dom.js';
import { del, get } from './api.js';
import { errorText, showError } from './errors.js';
import { dateNode, formatClock, onLangChange, setAttrs, setText, t } from './i18n.js';
import { state } from './state.js';

const ACTIVE = new Set(['queued', 'running']);
const FAST_MS = 1500;
const SLOW_MS = 10000;
const HIDDEN_MS = 30000;

const jobs = new Map();
const rows = new Map();
let loaded = false;
let timer = 0;
let inFlight = false;
let again = false;
let started = false;

export function initJobs() {
  $('#jobs-body').addEventListener('click', (event) => {
    const button = event.target.closest('button');
    const row = button && button.closest('tr[data-job-id]');
    if (!row) return;
    const job = jobs.get(row.dataset.jobId);
    if (!job) return;
    if (button.classList.contains('job-open')) window.location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    else if (button.classList.contains('job-cancel')) cancel(job, button);
    else if (button.classList.contains('job-delete')) remove(job, button);
  });
  onLangChange(() => {
    for (const [id, row] of rows) updateRow(row, jobs.get(id));
  });
  document.addEventListener('visibilitychange', () => {
    if (started && !document.hidden) refresh();
  });
}

/** Start following the jobs (after sign-in). */
export function startJobs() {
  started = true;
  refresh();
}

/** Refresh now (e.g. when My jobs is opened). */
export function refreshJobs() {
  if (started) refresh();
}

/** A job just created by this page: show it at once, then follow it. */
export function addJob(job) {
  jobs.set(job.id, job);
  render([job, ...Array.from(jobs.values()).filter((other) => other.id !== job.id)]);
  schedule();
}

export function jobById(id) {
  return jobs.get(id) || null;
}

async function refresh() {
  if (inFlight) {
    again = true;
    return;
  }
  inFlight = true;
  clearTimeout(timer);
  try {
    const answer = await get('/v1/jobs?limit=100');
    render((answer && answer.data) || []);
    showError($('#jobs-error'), null);
  } catch (error) {
    showError($('#jobs-error'), error);
  } finally {
    inFlight = false;
    if (again) {
      again = false;
      refresh();
    } else {
      schedule();
    }
  }
}

function schedule() {
  clearTimeout(timer);
  if (!started) return;
  const active = Array.from(jobs.values()).some((job) => ACTIVE.has(job.status));
  const delay = document.hidden ? HIDDEN_MS : active ? FAST_MS : SLOW_MS;
  timer = setTimeout(refresh, delay);
}

function render(list) {
  const body = $('#jobs-body');
  const previous = new Map(Array.from(jobs, ([id, job]) => [id, job.status]));
  const ids = new Set(list.map((job) => job.id));
  for (const [id, row] of rows) {
    if (!ids.has(id)) {
      row.remove();
      rows.delete(id);
      jobs.delete(id);
    }
  }
  let before = body.firstElementChild;
  for (const job of list) {
    jobs.set(job.id, job);
    let row = rows.get(job.id);
    if (!row) {
      row = buildRow(job);
      rows.set(job.id, row);
    }
    updateRow(row, job);
    if (row !== before) body.insertBefore(row, before);
    before = row.nextElementSibling;
    const was = previous.get(job.id);
    if (loaded && was && was !== job.status) {
      announce(t(`jobs.announce.${job.status}`, { name: job.filename || job.id }), $('#jobs-live'));
    }
  }
  loaded = true;
  renderEmpty(list.length === 0);
}

function renderEmpty(empty) {
  const slot = $('#jobs-empty-slot');
  const existing = $('#jobs-empty');
  if (!empty) {
    if (existing) existing.remove();
    return;
  }
  if (existing) return;
  const link = el('a', { class: 'button button-primary', href: '#/transcribe', i18n: 'jobs.emptyAction' });
  slot.append(el('div', { id: 'jobs-empty', class: 'card empty-state jobs-empty' },
    el('p', { i18n: 'jobs.empty' }),
    el('p', { class: 'hint', i18n: 'jobs.emptyHint' }),
    link));
}

function cell(labelKey, ...children) {
  // One wrapper per cell: on narrow screens the cell is a two-column grid (label, content).
  const td = el('td', {}, el('div', { class: 'cell-body' }, ...children));
  setAttrs(td, { 'data-label': labelKey });
  return td;
}

function buildRow(job) {
  const row = el('tr', { dataset: { jobId: job.id } });
  row.append(
    cell('jobs.col.name', el('div', { class: 'job-name' }), el('p', { class: 'job-note', hidden: true })),
    cell('jobs.col.status',
      el('span', { class: 'job-status' }),
      el('progress', { class: 'job-progress', max: '1', value: '0' }),
      el('p', { class: 'job-error', hidden: true })),
    cell('jobs.col.duration'),
    cell('jobs.col.model'),
    cell('jobs.col.created'),
    cell('jobs.col.actions'),
  );
  row.cells[2].className = 'num job-duration';
  row.cells[3].className = 'job-model';
  row.cells[4].className = 'job-created';
  row.cells[5].className = 'cell-actions';
  return row;
}

function statusKey(job) {
  if (job.status === 'running') return job.progress > 0 ? 'jobs.status.runningPercent' : 'jobs.status.starting';
  return `jobs.status.${job.status}`;
}

function updateRow(row, job) {
  const name = job.filename || t('jobs.unnamed');
  row.dataset.status = job.status;
  const [nameCell, statusCell, durationCell, modelCell, createdCell, actionsCell] = row.cells;

  const nameNode = nameCell.querySelector('.job-name');
  if (nameNode.textContent !== name) nameNode.textContent = name;
  const note = nameCell.querySelector('.job-note');
  if (job.task === 'translate') {
    if (note.dataset.i18n !== 'jobs.translated') setText(note, 'jobs.translated');
    note.hidden = false;
  } else {
    note.hidden = true;
  }

  const percent = Math.round((Number(job.progress) || 0) * 100);
  setText(statusCell.querySelector('.job-status'), statusKey(job), { percent });
  const bar = statusCell.querySelector('.job-progress');
  if (job.status === 'queued') bar.removeAttribute('value');
  else bar.value = job.status === 'done' ? 1 : Number(job.progress) || 0;
  setAttrs(bar, { 'aria-label': 'jobs.progressLabel' }, { name });
  const error = statusCell.querySelector('.job-error');
  if (job.status === 'failed') {
    error.textContent = errorText(job.error || { code: 'unknown' });
    error.hidden = false;
  } else {
    error.hidden = true;
    error.textContent = '';
  }

  const duration = Number.isFinite(job.audio_seconds) ? formatClock(job.audio_seconds) : '—';
  const durationBody = durationCell.firstElementChild;
  if (durationBody.textContent !== duration) durationBody.textContent = duration;
  const model = job.model || '—';
  const modelBody = modelCell.firstElementChild;
  if (modelBody.textContent !== model) modelBody.textContent = model;
  if (createdCell.dataset.created !== String(job.created_at)) {
    createdCell.dataset.created = String(job.created_at);
    createdCell.firstElementChild.replaceChildren(dateNode('time', Number(job.created_at)));
  }

  const wanted = job.status === 'done' ? ['open', 'delete']
    : ACTIVE.has(job.status) ? ['cancel'] : ['delete'];
  const box = actionsCell.firstElementChild;
  if (box.dataset.buttons !== wanted.join(',')) {
    const hadFocus = box.contains(document.activeElement);
    box.dataset.buttons = wanted.join(',');
    box.textContent = '';
    for (const action of wanted) {
      const button = el('button', {
        type: 'button',
        class: `button button-small ${action === 'open' ? 'button-secondary' : action === 'delete' ? 'button-danger' : 'button-quiet'} job-${action}`,
      });
      setText(button, `jobs.${action}`);
      box.append(button);
    }
    if (hadFocus) box.firstElementChild.focus();
  }
  for (const button of box.children) {
    const action = button.classList.contains('job-open') ? 'open'
      : button.classList.contains('job-cancel') ? 'cancel' : 'delete';
    setAttrs(button, { 'aria-label': `jobs.${action}Label` }, { name });
  }
}

async function cancel(job, button) {
  button.disabled = true;
  try {
    const answer = await del(`/v1/jobs/${encodeURIComponent(job.id)}`);
    showError($('#jobs-error'), null);
    if (answer && answer.status) {
      jobs.set(job.id, answer);
      updateRow(rows.get(job.id), answer);
    }
    refresh();
  } catch (error) {
    button.disabled = false;
    showError($('#jobs-error'), error);
  }
}

async function remove(job, button) {
  const name = job.filename || job.id;
  if (!window.confirm(t('jobs.confirmDelete', { name }))) return;
  button.disabled = true;
  const row = rows.get(job.id);
  const next = row && (row.nextElementSibling || row.previousElementSibling);
  try {
    await del(`/v1/jobs/${encodeURIComponent(job.id)}`);
    showError($('#jobs-error'), null);
    state.files.delete(job.id);
    if (row) row.remove();
    rows.delete(job.id);
    jobs.delete(job.id);
    announce(t('jobs.deleted', { name }), $('#jobs-live'));
    const target = next && next.isConnected ? next.querySelector('button') : null;
    (target || $('#jobs-title')).focus();
    renderEmpty(rows.size === 0);
  } catch (error) {
    button.disabled = false;
    showError($('#jobs-error'), error);
  }
}

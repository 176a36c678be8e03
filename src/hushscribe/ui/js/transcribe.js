// Transcribe: choose or drop files (or record), pick options, send. Each file becomes one job,
// sent one after the other with its upload progress in the file list; then My jobs shows them.

import { $, announce, el } from './dom.js';
import { get, upload } from './api.js';
import { errorText, showError, showMessage } from './errors.js';
import { formatBytes, onLangChange, setAttrs, setText, t } from './i18n.js';
import { menuOrder, nativeName } from './languages.js';
import { state } from './state.js';

/** Errors after which the files still waiting are not sent either. */
const STOP_CODES = new Set(['queue_full', 'insufficient_storage', 'forbidden', 'csrf_failed',
  'network', 'unauthorized', 'invalid_api_key', 'unavailable', 'address_not_allowed']);

const items = [];
const queue = [];
let nextId = 1;
let running = false;
let models = [];
let hooks = { onJobCreated() {}, onAllSent() {} };

export function initTranscribe(options) {
  hooks = { ...hooks, ...options };
  const zone = $('#drop-zone');
  const input = $('#file-input');
  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
  });
  for (const type of ['dragenter', 'dragover']) {
    zone.addEventListener(type, (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      zone.classList.add('dragover');
    });
  }
  zone.addEventListener('dragleave', (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove('dragover');
  });
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragover');
    addFiles(event.dataTransfer.files);
  });
  // A file dropped next to the zone must not make the browser leave the page for it.
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (event) => {
      if (hasFiles(event) && !zone.contains(event.target)) event.preventDefault();
    });
  }
  $('#file-list').addEventListener('click', (event) => {
    const button = event.target.closest('button.file-remove');
    if (!button) return;
    const index = items.findIndex((item) => String(item.id) === button.dataset.item);
    if (index >= 0 && items[index].state !== 'uploading') {
      const [removed] = items.splice(index, 1);
      removed.node.remove();
      announce(t('transcribe.removed', { name: removed.file.name }));
      $('#drop-zone label').focus();
    }
  });
  $('#transcribe-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const ready = items.filter((item) => item.state === 'ready' || item.state === 'error');
    if (!ready.length) {
      showMessage($('#transcribe-error'), items.length ? 'transcribe.busy' : 'transcribe.noFiles');
      return;
    }
    send(ready);
  });
  fillLanguages();
  onLangChange(() => {
    fillModels();
    for (const item of items) renderItem(item);
  });
}

function hasFiles(event) {
  return Boolean(event.dataTransfer && Array.from(event.dataTransfer.types || []).includes('Files'));
}

function addFiles(fileList) {
  let added = 0;
  for (const file of Array.from(fileList || [])) {
    const same = items.some((item) => item.file.name === file.name && item.file.size === file.size
      && item.file.lastModified === file.lastModified && item.state !== 'done');
    if (same) continue;
    addItem(file);
    added += 1;
  }
  if (added) {
    showError($('#transcribe-error'), null);
    announce(t('transcribe.added', { count: added }));
  }
}

function addItem(file) {
  const item = { id: nextId++, file, state: 'ready', loaded: 0, total: file.size, error: null };
  item.node = el('li', { class: 'file-item', dataset: { item: String(item.id) } });
  items.push(item);
  $('#file-list').append(item.node);
  renderItem(item);
  return item;
}

function renderItem(item) {
  const node = item.node;
  node.dataset.state = item.state;
  node.textContent = '';
  const meta = el('span', { class: 'file-meta' });
  if (item.state === 'uploading') {
    meta.textContent = progressText(item);
  } else if (item.state === 'queued') {
    meta.textContent = t('transcribe.waiting', { size: formatBytes(item.file.size) });
  } else {
    meta.textContent = formatBytes(item.file.size);
  }
  node.append(el('div', {}, el('div', { class: 'file-name', text: item.file.name }), meta));
  if (item.state !== 'uploading' && item.state !== 'queued') {
    const remove = el('button', {
      type: 'button',
      class: 'button button-quiet button-small file-remove',
      dataset: { item: String(item.id) },
    });
    setText(remove, 'transcribe.remove');
    setAttrs(remove, { 'aria-label': 'transcribe.removeLabel' }, { name: item.file.name });
    node.append(remove);
  } else {
    node.append(el('span'));
  }
  if (item.state === 'uploading') {
    const bar = el('progress', { max: String(item.total || 1), value: String(item.loaded) });
    setAttrs(bar, { 'aria-label': 'transcribe.progressLabel' }, { name: item.file.name });
    node.append(bar);
  }
  if (item.state === 'error' && item.error) {
    node.append(el('p', { class: 'file-error', text: errorText(item.error) }));
  }
}

function progressText(item) {
  if (item.total && item.loaded >= item.total) return t('transcribe.checking');
  return t('transcribe.uploading', {
    loaded: formatBytes(item.loaded),
    total: formatBytes(item.total),
    percent: item.total ? Math.floor((item.loaded / item.total) * 100) : 0,
  });
}

/** Progress events come many times a second: change two values, not the whole item. */
function updateProgress(item) {
  const bar = item.node.querySelector('progress');
  const meta = item.node.querySelector('.file-meta');
  if (!bar || !meta) {
    renderItem(item);
    return;
  }
  bar.max = item.total || 1;
  bar.value = item.loaded;
  meta.textContent = progressText(item);
}

function readOptions() {
  return {
    model: $('#opt-model').value,
    language: $('#opt-language').value,
    task: $('#opt-task').value,
    words: $('#opt-word-timestamps').checked,
    zhScript: $('#opt-zh-script').value,
    diarize: $('#opt-diarize').checked,
  };
}

function formFor(file, options) {
  const form = new FormData();
  if (options.model) form.append('model', options.model);
  if (options.language && options.language !== 'auto') form.append('language', options.language);
  form.append('task', options.task || 'transcribe');
  form.append('word_timestamps', options.words ? 'true' : 'false');
  if (options.words) form.append('timestamp_granularities[]', 'word');
  if (options.zhScript) form.append('zh_script', options.zhScript);
  if (options.diarize) form.append('diarize', 'true');
  form.append('file', file, file.name);
  return form;
}

/** Send a recording (a File) with the current options, like a chosen file. */
export function sendFile(file) {
  const item = addItem(file);
  send([item]);
  return item;
}

function send(list) {
  showError($('#transcribe-error'), null);
  for (const item of list) {
    if (queue.includes(item)) continue;
    item.state = 'queued';
    item.error = null;
    renderItem(item);
    queue.push(item);
  }
  if (!running) drain();
}

async function drain() {
  running = true;
  const submit = $('#submit');
  submit.setAttribute('aria-busy', 'true');
  setText(submit, 'transcribe.sending');
  let failed = false;
  let created = 0;
  while (queue.length) {
    const item = queue.shift();
    const options = readOptions();
    item.state = 'uploading';
    item.loaded = 0;
    item.total = item.file.size;
    renderItem(item);
    try {
      const job = await upload('/v1/jobs', formFor(item.file, options), {
        onProgress(loaded, total) {
          item.loaded = loaded;
          item.total = total || item.file.size;
          updateProgress(item);
        },
      });
      item.state = 'done';
      const index = items.indexOf(item);
      if (index >= 0) items.splice(index, 1);
      item.node.remove();
      if (job && job.id) {
        state.files.set(job.id, item.file);
        hooks.onJobCreated(job);
      }
      created += 1;
      announce(t('transcribe.sent', { name: item.file.name }));
    } catch (error) {
      failed = true;
      item.state = 'error';
      item.error = error;
      renderItem(item);
      showError($('#transcribe-error'), error);
      if (STOP_CODES.has(error.code)) {
        for (const rest of queue.splice(0)) {
          rest.state = 'ready';
          renderItem(rest);
        }
      }
    }
  }
  running = false;
  submit.removeAttribute('aria-busy');
  setText(submit, 'transcribe.submit');
  if (created) hooks.onAllSent({ created, failed });
}

// --- options -----------------------------------------------------------------------------------

function fillLanguages() {
  const select = $('#opt-language');
  select.textContent = '';
  select.append(el('option', { value: 'auto', i18n: 'options.languageAuto' }));
  for (const code of menuOrder()) {
    select.append(el('option', { value: code, lang: code === 'jw' ? 'jv' : code, text: `${nativeName(code)} (${code})` }));
  }
  select.value = 'auto';
}

/** Fill the model menu from /v1/models: the default first (the server's when none is marked). */
export async function loadModels() {
  try {
    const answer = await get('/v1/models');
    models = (answer && answer.data) || [];
  } catch (error) {
    models = [];
    showError($('#transcribe-error'), error);
  }
  fillModels();
}

function isDefault(model) {
  return model.default === true || model.is_default === true;
}

function fillModels() {
  const select = $('#opt-model');
  const chosen = select.value;
  select.textContent = '';
  const ordered = [...models.filter(isDefault), ...models.filter((m) => !isDefault(m))];
  if (!ordered.some(isDefault)) {
    select.append(el('option', { value: '', i18n: 'options.modelDefault' }));
  }
  for (const model of ordered) {
    const key = isDefault(model) ? 'options.modelIsDefault' : 'options.modelEntry';
    const vars = { name: model.id, size: model.bytes ? formatBytes(model.bytes) : '—' };
    select.append(el('option', { value: model.id, i18n: [key, vars] }));
  }
  if (chosen && Array.from(select.options).some((option) => option.value === chosen)) {
    select.value = chosen;
  } else {
    select.selectedIndex = 0;
  }
}

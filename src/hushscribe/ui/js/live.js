// Live captions: the microphone → an AudioWorklet (pcm-worklet.js: mono, 24 kHz, PCM16) →
// base64 `input_audio_buffer.append` every 100 ms over the OpenAI Realtime transcription
// WebSocket (/v1/realtime?intent=transcription, this origin, the session cookie).
//
// One paragraph per item (a turn): its confirmed text (the concatenated `…transcription.delta`)
// in black, then the unconfirmed tail (`hushscribe.transcription.partial`) in grey italics;
// `…transcription.completed` replaces both with the turn's final text. Stop sends
// `hushscribe.stop`: the server saves the whole stream as a job (`hushscribe.job.created`), which
// this view follows until its transcript is ready and then links to.

import { $, announce, el } from './dom.js';
import { get } from './api.js';
import { errorText, showError, showMessage } from './errors.js';
import { formatBytes, formatClock, onLangChange, setText, setTextOrClear } from './i18n.js';
import { languageCode, menuOrder, nativeName } from './languages.js';

const PATH = '/v1/realtime?intent=transcription';
const RATE = 24000;
const BACKLOG_MAX = 100; // chunks of 100 ms held while the session is being set up: 10 s
const FOLLOW_SLACK_PX = 32; // "at the bottom" for auto-scroll
const JOB_POLL_MS = 1500;
const SETUP_TIMEOUT_MS = 20000; // socket opened → session.updated
const FINISH_TIMEOUT_MS = 120000; // Stop → job created: the last turn is decoded first

/** Error codes of a live stream that have their own sentence here. */
const LIVE_ERRORS = {
  rate_limit_exceeded: 'live.busy',
  no_stream_worker: 'live.noWorker',
  idle_timeout: 'live.idle',
  max_duration_exceeded: 'live.tooLong',
  empty_audio: 'live.nothingHeard',
};

let hooks = { onJobCreated() {} };
let models = null;
let run = null; // the current session: {ws, stream, context, node, state, backlog, ...}
let items = new Map(); // item_id → {node, confirmedNode, partialNode, confirmed, partial, done}
let follow = true;
let clockTimer = 0;
let jobTimer = 0;

const ui = () => ({
  start: $('#live-start'),
  stop: $('#live-stop'),
  model: $('#live-model'),
  language: $('#live-language'),
  level: $('#live-level'),
  time: $('#live-time'),
  status: $('#live-status'),
  error: $('#live-error'),
  saved: $('#live-saved'),
  savedText: $('#live-saved-text'),
  link: $('#live-job-link'),
  captions: $('#live-captions'),
  empty: $('#live-empty'),
  follow: $('#live-follow'),
  detected: $('#live-detected-language'),
  panel: $('#live-panel'),
});

function say(key, vars) {
  setTextOrClear(ui().status, key, vars);
}

/** Start and the menus go together: a session's model and language are fixed once it runs. */
function setButtons(start, stop) {
  const controls = ui();
  for (const control of [controls.start, controls.model, controls.language]) control.disabled = !start;
  controls.stop.disabled = !stop;
}

function supported() {
  return Boolean(window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia
    && window.AudioWorkletNode && window.WebSocket);
}

export function initLive(options = {}) {
  hooks = { ...hooks, ...options };
  const controls = ui();
  fillLanguages();
  onLangChange(fillModels);
  controls.captions.addEventListener('scroll', () => {
    const box = controls.captions;
    follow = box.scrollHeight - box.scrollTop - box.clientHeight < FOLLOW_SLACK_PX;
    controls.follow.hidden = follow;
  });
  controls.follow.addEventListener('click', () => {
    follow = true;
    controls.follow.hidden = true;
    scrollToEnd();
  });
  if (!supported()) {
    setButtons(false, false);
    say(window.isSecureContext ? 'mic.unsupported' : 'mic.needsHttps');
    return;
  }
  setButtons(true, false);
  controls.start.addEventListener('click', start);
  controls.stop.addEventListener('click', stop);
}

/** The view was opened: fill the model menu once. */
export async function openLive() {
  if (models !== null) return;
  models = [];
  try {
    const answer = await get('/v1/models');
    models = ((answer && answer.data) || []).filter((model) => !model.alias_of);
  } catch (error) {
    models = null;
    showError(ui().error, error);
  }
  fillModels();
}

// --- the menus ---------------------------------------------------------------------------------

function fillLanguages() {
  const select = ui().language;
  select.textContent = '';
  select.append(el('option', { value: 'auto', i18n: 'options.languageAuto' }));
  for (const code of menuOrder()) {
    select.append(el('option', { value: code, lang: code === 'jw' ? 'jv' : code, text: `${nativeName(code)} (${code})` }));
  }
  select.value = 'auto';
}

function fillModels() {
  const select = ui().model;
  const chosen = select.value;
  const list = models || [];
  const isDefault = (model) => model.default === true;
  const ordered = [...list.filter(isDefault), ...list.filter((model) => !isDefault(model))];
  select.textContent = '';
  if (!ordered.some(isDefault)) select.append(el('option', { value: '', i18n: 'options.modelDefault' }));
  for (const model of ordered) {
    const key = isDefault(model) ? 'options.modelIsDefault' : 'options.modelEntry';
    select.append(el('option', { value: model.id, i18n: [key, { name: model.id, size: model.bytes ? formatBytes(model.bytes) : '—' }] }));
  }
  if (chosen && Array.from(select.options).some((option) => option.value === chosen)) select.value = chosen;
}

// --- starting and stopping ---------------------------------------------------------------------

async function start() {
  const controls = ui();
  setButtons(false, false);
  showError(controls.error, null);
  controls.saved.hidden = true;
  clearTimeout(jobTimer);
  clearCaptions();
  say('mic.asking');
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    const name = error && error.name;
    say(name === 'NotAllowedError' || name === 'SecurityError' ? 'mic.denied'
      : name === 'NotFoundError' || name === 'OverconstrainedError' ? 'mic.notFound'
        : name === 'NotReadableError' ? 'mic.busy' : 'mic.failed');
    setButtons(true, false);
    return;
  }
  const current = { stream, state: 'connecting', backlog: [], opened: false, job: null };
  run = current;
  try {
    await capture(current);
  } catch {
    finish(current, 'mic.failed');
    return;
  }
  connect(current);
}

/** The audio graph: microphone → (low-pass, when the browser cannot run at 24 kHz) → worklet. */
async function capture(current) {
  let context;
  let source;
  try {
    context = new AudioContext({ sampleRate: RATE });
    source = context.createMediaStreamSource(current.stream);
  } catch {
    // Some browsers cannot connect a microphone to a context at another rate: the worklet
    // resamples, behind two low-pass filters that keep what it drops from folding back.
    if (context) context.close();
    context = new AudioContext();
    source = context.createMediaStreamSource(current.stream);
  }
  current.context = context;
  await context.audioWorklet.addModule(new URL('./pcm-worklet.js', import.meta.url));
  const node = new AudioWorkletNode(context, 'hushscribe-pcm', { numberOfOutputs: 1 });
  let last = source;
  if (context.sampleRate !== RATE) {
    for (let i = 0; i < 2; i += 1) {
      const filter = context.createBiquadFilter();
      filter.type = 'lowpass';
      filter.frequency.value = 0.45 * RATE;
      last.connect(filter);
      last = filter;
    }
  }
  last.connect(node);
  node.connect(context.destination); // pulled by the graph; the node writes silence
  node.port.onmessage = (event) => onAudio(current, event.data);
  current.node = node;
  if (context.state === 'suspended') await context.resume();
}

function onAudio(current, data) {
  if (data.done) {
    if (current.flushed) current.flushed();
    return;
  }
  ui().level.value = Math.min(1, Math.max(0, (20 * Math.log10(data.rms || 1e-8) + 60) / 60));
  if (current.state === 'live' || current.state === 'stopping') send(current, data.pcm);
  else if (current.state === 'connecting' && current.backlog.length < BACKLOG_MAX) current.backlog.push(data.pcm);
}

function connect(current) {
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${window.location.host}${PATH}`);
  current.ws = ws;
  ws.addEventListener('open', () => {
    current.opened = true;
    const transcription = {};
    if (ui().model.value) transcription.model = ui().model.value;
    if (ui().language.value !== 'auto') transcription.language = ui().language.value;
    ws.send(JSON.stringify({
      type: 'session.update',
      session: {
        type: 'transcription',
        audio: {
          input: {
            format: { type: 'audio/pcm', rate: RATE },
            transcription,
            turn_detection: { type: 'server_vad' },
          },
        },
      },
    }));
  });
  ws.addEventListener('message', (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (run === current) onEvent(current, message);
  });
  ws.addEventListener('close', (event) => onClose(current, event));
  current.setupTimer = setTimeout(() => {
    if (current.state === 'connecting') finish(current, 'live.refused');
  }, SETUP_TIMEOUT_MS);
}

function send(current, pcm) {
  if (current.ws && current.ws.readyState === WebSocket.OPEN) {
    current.ws.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: base64(pcm) }));
  }
}

function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

async function stop() {
  const current = run;
  if (!current || current.state !== 'live') return;
  current.state = 'stopping';
  setButtons(false, false);
  say('live.finishing');
  // The worklet's last partial chunk goes out before the stop (at most 100 ms of speech).
  await new Promise((resolve) => {
    current.flushed = resolve;
    current.node.port.postMessage('flush');
    setTimeout(resolve, 500);
  });
  release(current);
  if (current.state !== 'stopping' || current.ws.readyState !== WebSocket.OPEN) return;
  current.ws.send(JSON.stringify({ type: 'hushscribe.stop' }));
  current.finishTimer = setTimeout(() => {
    if (run === current && !current.job) finish(current, 'live.notSaved');
  }, FINISH_TIMEOUT_MS);
}

/** Stop the microphone and the audio graph (the socket may stay open for the last events). */
function release(current) {
  if (current.node) {
    current.node.port.onmessage = null;
    current.node.disconnect();
  }
  if (current.context && current.context.state !== 'closed') current.context.close();
  if (current.stream) for (const track of current.stream.getTracks()) track.stop();
  current.node = null;
  current.context = null;
  current.stream = null;
  clearInterval(clockTimer);
  ui().level.value = 0;
  ui().panel.classList.remove('recording');
}

/** The session is over: free everything, say why (a string key) unless it ended well. */
function finish(current, key, vars) {
  if (current.state === 'ended') return;
  current.state = 'ended';
  clearTimeout(current.finishTimer);
  clearTimeout(current.setupTimer);
  release(current);
  if (current.ws && current.ws.readyState <= WebSocket.OPEN) current.ws.close(1000);
  for (const item of items.values()) {
    if (item.partial && !item.done) {
      item.partial = '';
      render(item);
    }
  }
  if (run === current) {
    setButtons(true, false);
    say(null);
    if (key && !current.failed) showMessage(ui().error, key, vars); // else the server's error stays
  }
}

function onClose(current, event) {
  if (current.state === 'ended') return;
  if (current.job) {
    finish(current, null);
    return;
  }
  let key = 'live.closed';
  if (!current.opened) key = 'live.refused';
  else if (event.code === 1013) key = 'live.busy';
  else if (event.code === 1008) key = 'live.notAllowed';
  else if (event.code === 1011) key = 'live.serverError';
  else if (current.state === 'stopping') key = 'live.notSaved';
  finish(current, key);
}

// --- server events -----------------------------------------------------------------------------

function onEvent(current, message) {
  const type = message.type || '';
  if (type === 'session.updated' && current.state === 'connecting') {
    current.state = 'live';
    current.failed = false; // a refused setting before this one was answered already
    for (const pcm of current.backlog.splice(0)) send(current, pcm);
    const began = performance.now();
    const tick = () => { ui().time.textContent = formatClock((performance.now() - began) / 1000); };
    tick();
    clockTimer = setInterval(tick, 250);
    ui().panel.classList.add('recording');
    setButtons(false, true);
    say('live.listening');
    ui().stop.focus();
  } else if (type === 'conversation.item.input_audio_transcription.delta') {
    const item = itemFor(message.item_id);
    if (!item.done) {
      item.confirmed += String(message.delta || '');
      render(item);
    }
  } else if (type === 'hushscribe.transcription.partial') {
    const item = itemFor(message.item_id);
    if (!item.done) {
      item.partial = String(message.text || '');
      render(item);
    }
  } else if (type === 'conversation.item.input_audio_transcription.completed') {
    const item = itemFor(message.item_id);
    item.confirmed = String(message.transcript || '').trim();
    item.partial = '';
    item.done = true;
    render(item);
    if (item.confirmed) announce(item.confirmed);
    if (message.language) showLanguage(message.language);
  } else if (type === 'error') {
    current.failed = true;
    const error = errorOf(message);
    if (LIVE_ERRORS[error.code]) showMessage(ui().error, LIVE_ERRORS[error.code]);
    else showError(ui().error, error);
  } else if (type === 'hushscribe.job.created' && message.job && message.job.id) {
    current.job = message.job;
    clearTimeout(current.finishTimer);
    say(null);
    saved(message.job.id);
  }
}

/** An `error` event's {code, message} as the page's errors module reads it. */
function errorOf(message) {
  const error = message.error || {};
  // A fault on the server names an error id for the log: the page's sentence quotes it.
  const code = error.code === 'server_error' ? 'internal_error' : error.code || error.type || 'unknown';
  return { code, message: error.message || '' };
}

function showLanguage(value) {
  const node = ui().detected;
  node.textContent = nativeName(value) || '—';
  const code = languageCode(value);
  if (code) node.lang = code;
  else node.removeAttribute('lang');
}

// --- the captions ------------------------------------------------------------------------------

function clearCaptions() {
  items = new Map();
  const { captions, empty, detected, follow: button } = ui();
  captions.replaceChildren(empty);
  empty.hidden = false;
  detected.textContent = '—';
  detected.removeAttribute('lang');
  follow = true;
  button.hidden = true;
  ui().time.textContent = formatClock(0);
}

function itemFor(id) {
  const key = String(id || 'item');
  let item = items.get(key);
  if (!item) {
    const confirmedNode = el('span', { class: 'live-confirmed' });
    const partialNode = el('span', { class: 'live-partial' });
    const node = el('p', { class: 'live-item', dataset: { itemId: key, state: 'open' } }, confirmedNode, partialNode);
    item = { node, confirmedNode, partialNode, confirmed: '', partial: '', done: false };
    items.set(key, item);
    ui().empty.hidden = true;
    ui().captions.append(node);
  }
  return item;
}

function render(item) {
  const confirmed = item.confirmed.trimStart();
  item.confirmedNode.textContent = confirmed;
  let partial = item.partial;
  if (partial && confirmed && !/\s$/.test(confirmed) && !/^\s/.test(partial)) partial = ` ${partial}`;
  item.partialNode.textContent = confirmed ? partial : partial.trimStart();
  item.node.dataset.state = item.done ? 'done' : 'open';
  if (follow) scrollToEnd();
}

function scrollToEnd() {
  const box = ui().captions;
  box.scrollTop = box.scrollHeight;
}

// --- the saved job -----------------------------------------------------------------------------

function saved(jobId) {
  const { saved: box, link } = ui();
  link.href = `#/jobs/${encodeURIComponent(jobId)}`;
  link.dataset.jobId = jobId;
  box.dataset.status = 'queued';
  box.hidden = false;
  setText(ui().savedText, 'live.saved');
  followJob(jobId, true);
}

async function followJob(jobId, first) {
  const box = ui().saved;
  if (ui().link.dataset.jobId !== jobId) return;
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    showError(ui().error, error);
    return;
  }
  if (ui().link.dataset.jobId !== jobId) return;
  if (first) hooks.onJobCreated(job);
  box.dataset.status = job.status;
  const text = ui().savedText;
  if (job.status === 'done') setText(text, 'live.savedDone');
  else if (job.status === 'failed' || job.status === 'cancelled') {
    delete text.dataset.i18n;
    text.textContent = errorText(job.error || { code: job.status === 'cancelled' ? 'job_cancelled' : 'unknown' });
  } else {
    const percent = Math.round((Number(job.progress) || 0) * 100);
    setText(text, job.status === 'running' ? 'live.savedRunning' : 'live.saved', { percent });
    jobTimer = setTimeout(() => followJob(jobId, false), JOB_POLL_MS);
  }
}

// The transcript: segments as paragraphs with their start time, built in one DocumentFragment
// (a two-hour recording is about 1,500 of them), one delegated click listener, a debounced
// search that hides what does not match and marks what does, copy and downloads.
//
// Audio: the server's copy (GET /v1/jobs/{id}/audio) in an <audio> element while it is kept;
// else the file this page uploaded, decoded with Web Audio (the CSP allows no blob: media);
// else none, and a note says so.

import { $, $$, copyText, debounce, el, saveBlob } from './dom.js';
import { get, request } from './api.js';
import { showError } from './errors.js';
import { formatClock, formatNumber, setText, setTextOrClear } from './i18n.js';
import { languageCode, nativeName } from './languages.js';
import {
  displayName, hideSpeakers, initSpeakers, showSpeakers, speakerLabel,
} from './speakers.js';
import { state } from './state.js';

const LOCAL_AUDIO_MAX_BYTES = 200 * 1024 * 1024;

let view = null; // {jobId, job, result, segments: [{start, end, text, node}], withHours}
let mode = 'none'; // 'element' | 'webaudio' | 'none'
let currentIndex = -1;
let marked = new Set();
let loadToken = 0;
let web = null; // {context, buffer, source, offset, startedAt, timer, decoding}

export function initTranscript() {
  initSpeakers();
  $('#segments').addEventListener('click', onSegmentClick);
  $('#transcript-search').addEventListener('input', debounce(search, 200));
  $('#transcript-copy').addEventListener('click', copyAll);
  for (const button of $$('button[data-download]')) {
    button.addEventListener('click', () => download(button.dataset.download, button));
  }
  const audio = $('#transcript-audio');
  audio.addEventListener('timeupdate', () => follow(audio.currentTime));
  audio.addEventListener('seeked', () => follow(audio.currentTime));
  audio.addEventListener('error', () => {
    if (mode === 'element' && audio.getAttribute('src')) {
      setNote('transcript.audioFailed');
    }
  });
  $('#transcript-webaudio-toggle').addEventListener('click', () => {
    if (web && web.source) pauseWeb();
    else playWeb(web ? web.offset : 0);
  });
}

/** Show job `jobId`'s transcript (kept as it was when the same job is opened again). */
export async function openTranscript(jobId) {
  const root = $('#transcript');
  if (view && view.jobId === jobId && view.result) return;
  const token = ++loadToken;
  reset();
  root.dataset.jobId = jobId;
  view = { jobId, job: null, result: null, segments: [], withHours: false };
  $('#transcript-loading').hidden = false;
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    if (token !== loadToken) return;
    $('#transcript-loading').hidden = true;
    showError($('#transcript-error'), error);
    return;
  }
  if (token !== loadToken) return;
  view.job = job;
  $('#transcript-title').textContent = job.filename || jobId;
  $('#transcript-model').textContent = job.model || '—';
  if (job.status !== 'done') {
    $('#transcript-loading').hidden = true;
    const error = job.status === 'failed' || job.status === 'cancelled'
      ? (job.error || { code: job.status === 'cancelled' ? 'job_cancelled' : 'unknown' })
      : { code: 'job_not_done' };
    showError($('#transcript-error'), error);
    return;
  }
  let result;
  let audioKept;
  try {
    [result, audioKept] = await Promise.all([
      get(`/v1/jobs/${encodeURIComponent(jobId)}/result?format=verbose_json`),
      serverAudio(jobId),
    ]);
  } catch (error) {
    if (token !== loadToken) return;
    $('#transcript-loading').hidden = true;
    showError($('#transcript-error'), error);
    return;
  }
  if (token !== loadToken) return;
  $('#transcript-loading').hidden = true;
  view.result = result;
  const local = state.files.get(jobId);
  const AudioCtx = window.AudioContext || window.webkitAudioContext;
  if (audioKept) mode = 'element';
  else if (local && local.size < LOCAL_AUDIO_MAX_BYTES && AudioCtx) mode = 'webaudio';
  else mode = 'none';
  render(job, result);
  showSpeakers(jobId, result, relabel);
  setupAudio(jobId);
}

/** Whether the server still keeps the job's audio: one byte asked for, the rest not read. */
async function serverAudio(jobId) {
  const controller = new AbortController();
  try {
    const response = await request('GET', `/v1/jobs/${encodeURIComponent(jobId)}/audio`, {
      raw: true,
      headers: { Range: 'bytes=0-0', Accept: '*/*' },
      signal: controller.signal,
    });
    const ok = response.status === 200 || response.status === 206;
    controller.abort();
    return ok;
  } catch (error) {
    if (error && error.status === 401) throw error;
    return false;
  }
}

/** Leaving the view: stop any sound. The transcript itself stays for a return visit. */
export function leaveTranscript() {
  const audio = $('#transcript-audio');
  if (!audio.paused) audio.pause();
  pauseWeb();
}

function reset() {
  leaveTranscript();
  const audio = $('#transcript-audio');
  if (audio.getAttribute('src')) {
    audio.removeAttribute('src');
    audio.load();
  }
  if (web && web.context && web.context.state !== 'closed') web.context.close();
  web = null;
  mode = 'none';
  currentIndex = -1;
  marked = new Set();
  view = null;
  $('#transcript').removeAttribute('data-job-id');
  $('#transcript-title').textContent = '';
  for (const id of ['#transcript-language', '#transcript-model', '#transcript-duration', '#transcript-count']) {
    $(id).textContent = '—';
  }
  $('#segments').textContent = '';
  $('#segments').classList.remove('playable');
  $('#transcript-search').value = '';
  $('#transcript-player').hidden = true;
  $('#transcript-webaudio').hidden = true;
  setNote(null);
  setStatus(null);
  showError($('#transcript-error'), null);
  hideSpeakers();
}

function render(job, result) {
  const segments = Array.isArray(result.segments) ? result.segments : [];
  const duration = Number(result.duration) || Number(job.audio_seconds) || 0;
  view.withHours = duration >= 3600;
  const languageNode = $('#transcript-language');
  languageNode.textContent = result.language ? nativeName(result.language) : '—';
  const code = languageCode(result.language);
  if (code) languageNode.lang = code;
  else languageNode.removeAttribute('lang');
  $('#transcript-duration').textContent = duration ? formatClock(duration) : '—';
  $('#transcript-count').textContent = formatNumber(segments.length);

  const playable = mode !== 'none';
  const fragment = document.createDocumentFragment();
  view.segments = segments.map((segment, index) => {
    const start = Number(segment.start) || 0;
    const end = Number(segment.end) || start;
    const text = String(segment.text || '').trim();
    const node = document.createElement('p');
    node.className = 'segment';
    node.dataset.start = String(start);
    node.dataset.end = String(end);
    node.dataset.index = String(index);
    const time = document.createElement(playable ? 'button' : 'span');
    time.className = 'segment-time';
    if (playable) {
      time.type = 'button';
      time.setAttribute('aria-describedby', 'segment-play-hint');
    }
    time.textContent = formatClock(start, view.withHours);
    const body = document.createElement('span');
    body.className = 'segment-text';
    body.textContent = text;
    const label = speakerLabel(result.speakers, segment, segments[index - 1]);
    if (label) node.dataset.speaker = label.dataset.speakerId;
    node.append(time, label ? el('span', { class: 'segment-main' }, label, body) : body);
    fragment.append(node);
    return { start, end, text, node, body, label };
  });
  const container = $('#segments');
  container.classList.toggle('playable', playable);
  container.replaceChildren(fragment);
  if (!segments.length) {
    container.append(el('p', { class: 'segment-empty hint', i18n: 'transcript.empty' }));
  }
}

/** New names (after a rename, or a language switch for unnamed speakers) on every label. */
function relabel(speakers) {
  if (!view || !view.result) return;
  view.result.speakers = speakers;
  for (const segment of view.segments) {
    const { label } = segment;
    if (label) label.textContent = displayName(speakers, label.dataset.speakerId);
  }
}

function setupAudio(jobId) {
  const audio = $('#transcript-audio');
  if (mode === 'element') {
    audio.src = `/v1/jobs/${encodeURIComponent(jobId)}/audio`;
    $('#transcript-player').hidden = false;
    $('#transcript-webaudio').hidden = true;
    setNote('transcript.audioServer');
  } else if (mode === 'webaudio') {
    $('#transcript-player').hidden = false;
    audio.removeAttribute('src');
    audio.hidden = true;
    $('#transcript-webaudio').hidden = false;
    setText($('#transcript-webaudio-toggle'), 'transcript.playFromStart');
    $('#transcript-webaudio-time').textContent = formatClock(0, view.withHours);
    setNote('transcript.audioLocal');
  } else {
    setNote('transcript.audioNotKept');
  }
  if (mode === 'element') audio.hidden = false;
}

function setNote(key) {
  setTextOrClear($('#transcript-audio-note'), key);
}

function setStatus(key, vars) {
  setTextOrClear($('#transcript-status'), key, vars);
}

// --- playback ----------------------------------------------------------------------------------

function onSegmentClick(event) {
  if (mode === 'none' || !view) return;
  const node = event.target.closest('.segment');
  if (!node) return;
  // Selecting text in a paragraph is not a click to play.
  const selection = window.getSelection();
  if (selection && !selection.isCollapsed && node.contains(selection.anchorNode)
    && !event.target.closest('button')) return;
  const start = Number(node.dataset.start) || 0;
  if (mode === 'element') {
    const audio = $('#transcript-audio');
    audio.currentTime = start;
    const playing = audio.play();
    if (playing && playing.catch) playing.catch(() => setNote('transcript.audioFailed'));
  } else {
    playWeb(start);
  }
  follow(start, true);
}

/** Highlight the segment under `time`; scroll to it when the reader was following along. */
function follow(time, fromClick = false) {
  if (!view || !view.segments.length) return;
  const list = view.segments;
  let low = 0;
  let high = list.length - 1;
  let found = -1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (list[middle].start <= time + 0.001) {
      found = middle;
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  if (found >= 0 && time > list[found].end + 1.5 && !fromClick) found = -1; // a pause between segments
  if (found === currentIndex) return;
  const previous = currentIndex >= 0 ? list[currentIndex].node : null;
  const wasVisible = previous ? inView(previous) : true;
  if (previous) previous.classList.remove('current');
  currentIndex = found;
  if (found < 0) return;
  const node = list[found].node;
  node.classList.add('current');
  if (!fromClick && wasVisible && !node.hidden && !inView(node)) {
    node.scrollIntoView({ block: 'nearest' });
  }
}

function inView(node) {
  const box = node.getBoundingClientRect();
  return box.bottom > 0 && box.top < window.innerHeight;
}

async function ensureWeb() {
  if (web && web.buffer) return web;
  if (web && web.decoding) return web.decoding;
  const file = view && state.files.get(view.jobId);
  if (!file) return null;
  const AudioCtx = window.AudioContext || window.webkitAudioContext;
  let context;
  try {
    context = new AudioCtx({ sampleRate: 16000 }); // speech: a quarter of the memory of 48 kHz
  } catch {
    context = new AudioCtx();
  }
  web = { context, buffer: null, source: null, offset: 0, startedAt: 0, timer: 0, decoding: null };
  setNote('transcript.audioDecoding');
  web.decoding = (async () => {
    try {
      web.buffer = await context.decodeAudioData(await file.arrayBuffer());
      setNote('transcript.audioLocal');
      return web;
    } catch {
      setNote('transcript.audioCannotDecode');
      mode = 'none';
      $('#segments').classList.remove('playable');
      $('#transcript-webaudio').hidden = true;
      return null;
    } finally {
      if (web) web.decoding = null;
    }
  })();
  return web.decoding;
}

async function playWeb(offset) {
  const player = await ensureWeb();
  if (!player || !player.buffer) return;
  pauseWeb();
  if (player.context.state === 'suspended') await player.context.resume();
  const source = player.context.createBufferSource();
  source.buffer = player.buffer;
  source.connect(player.context.destination);
  const from = Math.max(0, Math.min(offset, player.buffer.duration));
  source.start(0, from);
  player.source = source;
  player.offset = from;
  player.startedAt = player.context.currentTime;
  source.addEventListener('ended', () => {
    if (player.source === source) {
      player.source = null;
      player.offset = 0;
      clearInterval(player.timer);
      setText($('#transcript-webaudio-toggle'), 'transcript.playFromStart');
    }
  });
  setText($('#transcript-webaudio-toggle'), 'transcript.pause');
  clearInterval(player.timer);
  player.timer = setInterval(() => {
    const now = player.offset + (player.context.currentTime - player.startedAt);
    $('#transcript-webaudio-time').textContent = formatClock(now, view && view.withHours);
    follow(now);
  }, 250);
}

function pauseWeb() {
  if (!web || !web.source) return;
  const source = web.source;
  web.offset += web.context.currentTime - web.startedAt;
  web.source = null;
  clearInterval(web.timer);
  try {
    source.stop();
  } catch {
    /* already ended */
  }
  setText($('#transcript-webaudio-toggle'), 'transcript.resume');
}

// --- search, copy, download --------------------------------------------------------------------

function search() {
  if (!view) return;
  const query = $('#transcript-search').value.trim();
  for (const index of marked) {
    const segment = view.segments[index];
    segment.body.textContent = segment.text;
  }
  marked = new Set();
  if (!query) {
    for (const segment of view.segments) segment.node.hidden = false;
    setStatus(null);
    return;
  }
  const pattern = new RegExp(query.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'giu');
  let matches = 0;
  view.segments.forEach((segment, index) => {
    pattern.lastIndex = 0;
    const hit = pattern.test(segment.text);
    segment.node.hidden = !hit;
    if (!hit) return;
    matches += 1;
    marked.add(index);
    const parts = document.createDocumentFragment();
    let last = 0;
    pattern.lastIndex = 0;
    for (const match of segment.text.matchAll(pattern)) {
      if (match.index > last) parts.append(segment.text.slice(last, match.index));
      parts.append(el('mark', { text: match[0] }));
      last = match.index + match[0].length;
    }
    if (last < segment.text.length) parts.append(segment.text.slice(last));
    segment.body.replaceChildren(parts);
  });
  setStatus(matches ? 'transcript.matches' : 'transcript.noMatches',
    { count: matches, total: view.segments.length, query });
}

async function copyAll() {
  if (!view || !view.result) return;
  const text = view.segments.length
    ? view.segments.map((segment) => segment.text).join('\n')
    : String(view.result.text || '');
  try {
    await copyText(text);
    setStatus('transcript.copied');
  } catch {
    setStatus('transcript.copyFailed');
  }
}

function baseName() {
  const name = (view && view.job && view.job.filename) || 'transcript';
  const dot = name.lastIndexOf('.');
  return (dot > 0 ? name.slice(0, dot) : name) || 'transcript';
}

async function download(format, button) {
  if (!view || !view.result) return;
  button.disabled = true;
  try {
    const response = await request('GET',
      `/v1/jobs/${encodeURIComponent(view.jobId)}/result?format=${encodeURIComponent(format)}`,
      { raw: true, headers: { Accept: '*/*' } });
    const blob = await response.blob();
    saveBlob(blob, `${baseName()}.${format}`);
    showError($('#transcript-error'), null);
    setStatus('transcript.downloaded', { name: `${baseName()}.${format}` });
  } catch (error) {
    showError($('#transcript-error'), error);
  } finally {
    button.disabled = false;
  }
}


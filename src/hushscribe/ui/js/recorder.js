// The microphone: MediaRecorder records (Opus in WebM where the browser can), an AnalyserNode
// drives the level meter, and the recording plays back through Web Audio (no media element:
// the page's CSP allows no blob: media). "Send" hands the File to the normal job submission.

import { $ } from './dom.js';
import { formatClock, setText, setTextOrClear } from './i18n.js';

const TYPES = [
  ['audio/webm;codecs=opus', 'webm'],
  ['audio/ogg;codecs=opus', 'ogg'],
  ['audio/webm', 'webm'],
  ['audio/mp4', 'm4a'],
];

let send = () => {};
let stream = null;
let recorder = null;
let chunks = [];
let context = null;
let analyser = null;
let levelFrame = 0;
let clockTimer = 0;
let startedAt = 0;
let recording = null; // {file, seconds}
let player = null; // AudioBufferSourceNode while playing back
let decoded = null; // {file, buffer}

const ui = () => ({
  box: $('#mic'),
  start: $('#mic-start'),
  stop: $('#mic-stop'),
  play: $('#mic-play'),
  sendButton: $('#mic-send'),
  level: $('#mic-level'),
  time: $('#mic-time'),
  message: $('#mic-message'),
});

function say(key, vars) {
  setTextOrClear(ui().message, key, vars);
}

function setButtons({ start, stop, play, sendButton }) {
  const controls = ui();
  controls.start.disabled = !start;
  controls.stop.disabled = !stop;
  controls.play.disabled = !play;
  controls.sendButton.disabled = !sendButton;
}

function supported() {
  return Boolean(window.isSecureContext && navigator.mediaDevices
    && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
}

export function initRecorder({ onSend }) {
  send = onSend;
  const controls = ui();
  if (!supported()) {
    setButtons({});
    say(window.isSecureContext ? 'mic.unsupported' : 'mic.needsHttps');
    return;
  }
  setButtons({ start: true });
  controls.start.addEventListener('click', start);
  controls.stop.addEventListener('click', stop);
  controls.play.addEventListener('click', togglePlayback);
  controls.sendButton.addEventListener('click', () => {
    if (!recording) return;
    stopPlayback();
    send(recording.file);
    setButtons({ start: true, play: true });
    say('mic.sent', { name: recording.file.name });
  });
}

function audioContext() {
  if (!context || context.state === 'closed') {
    const Context = window.AudioContext || window.webkitAudioContext;
    context = new Context();
  }
  if (context.state === 'suspended') context.resume();
  return context;
}

function stamp(date) {
  const two = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${two(date.getMonth() + 1)}${two(date.getDate())}-`
    + `${two(date.getHours())}${two(date.getMinutes())}${two(date.getSeconds())}`;
}

async function start() {
  stopPlayback();
  setButtons({});
  say('mic.asking');
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
  } catch (error) {
    const name = error && error.name;
    say(name === 'NotAllowedError' || name === 'SecurityError' ? 'mic.denied'
      : name === 'NotFoundError' || name === 'OverconstrainedError' ? 'mic.notFound'
        : name === 'NotReadableError' ? 'mic.busy' : 'mic.failed');
    setButtons({ start: true, play: Boolean(recording), sendButton: Boolean(recording) });
    return;
  }
  const [mimeType, extension] = TYPES.find(([type]) => MediaRecorder.isTypeSupported(type)) || ['', 'webm'];
  try {
    recorder = new MediaRecorder(stream, mimeType ? { mimeType, audioBitsPerSecond: 64000 } : {});
  } catch {
    release();
    say('mic.failed');
    setButtons({ start: true });
    return;
  }
  const began = new Date();
  chunks = [];
  recorder.addEventListener('dataavailable', (event) => {
    if (event.data && event.data.size) chunks.push(event.data);
  });
  recorder.addEventListener('stop', () => {
    const type = (recorder.mimeType || mimeType || 'audio/webm').split(';')[0];
    const seconds = (performance.now() - startedAt) / 1000;
    const blob = new Blob(chunks, { type });
    chunks = [];
    release();
    if (!blob.size) {
      say('mic.empty');
      setButtons({ start: true });
      return;
    }
    const file = new File([blob], `recording-${stamp(began)}.${extension}`, { type });
    recording = { file, seconds };
    decoded = null;
    setButtons({ start: true, play: true, sendButton: true });
    say('mic.ready', { time: formatClock(seconds) });
    ui().play.focus();
  });
  recorder.start(1000);
  startedAt = performance.now();
  meter();
  clockTimer = setInterval(tick, 250);
  tick();
  ui().box.classList.add('recording');
  setButtons({ stop: true });
  say('mic.recording');
  ui().stop.focus();
}

function tick() {
  ui().time.textContent = formatClock((performance.now() - startedAt) / 1000);
}

function meter() {
  const ctx = audioContext();
  const source = ctx.createMediaStreamSource(stream);
  analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const level = ui().level;
  const draw = () => {
    if (!analyser) return;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const sample of samples) sum += sample * sample;
    const rms = Math.sqrt(sum / samples.length);
    const db = 20 * Math.log10(rms || 1e-8);
    level.value = Math.min(1, Math.max(0, (db + 60) / 60)); // -60 dBFS … 0 dBFS
    levelFrame = requestAnimationFrame(draw);
  };
  draw();
}

function stop() {
  if (recorder && recorder.state !== 'inactive') recorder.stop();
  setButtons({});
}

function release() {
  cancelAnimationFrame(levelFrame);
  clearInterval(clockTimer);
  analyser = null;
  if (stream) for (const track of stream.getTracks()) track.stop();
  stream = null;
  const controls = ui();
  controls.level.value = 0;
  controls.box.classList.remove('recording');
}

async function togglePlayback() {
  if (player) {
    stopPlayback();
    return;
  }
  if (!recording) return;
  const ctx = audioContext();
  try {
    if (!decoded || decoded.file !== recording.file) {
      say('mic.decoding');
      const bytes = await recording.file.arrayBuffer();
      decoded = { file: recording.file, buffer: await ctx.decodeAudioData(bytes) };
    }
  } catch {
    say('mic.cannotPlay');
    return;
  }
  const source = ctx.createBufferSource();
  source.buffer = decoded.buffer;
  source.connect(ctx.destination);
  source.addEventListener('ended', () => {
    if (player === source) {
      player = null;
      setText(ui().play, 'mic.play');
      say('mic.ready', { time: formatClock(recording ? recording.seconds : 0) });
    }
  });
  player = source;
  source.start();
  setText(ui().play, 'mic.stopPlaying');
  say('mic.playing');
}

function stopPlayback() {
  if (!player) return;
  const source = player;
  player = null;
  try {
    source.stop();
  } catch {
    /* already ended */
  }
  setText(ui().play, 'mic.play');
}

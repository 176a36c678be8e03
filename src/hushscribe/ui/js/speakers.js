// Who spoke: the speaker names of a job's transcript and the form that renames them
// (PATCH /v1/jobs/{id}/speakers). A speaker keeps its id ("Speaker 1"); the name is what the
// transcript and its downloads show. An unnamed speaker is shown in the page's language.

import { $, el } from './dom.js';
import { patch } from './api.js';
import { showError, showMessage } from './errors.js';
import { onLangChange, setText, setTextOrClear, t } from './i18n.js';

const NAME_MAX = 80; // the server's limit (transcript.SPEAKER_NAME_MAX)
const DEFAULT = /^Speaker (\d+)$/;

let current = null; // {jobId, speakers: [{id, name}], onChange(speakers)}

export function initSpeakers() {
  $('#speakers-form').addEventListener('submit', (event) => {
    event.preventDefault();
    save();
  });
  onLangChange(() => {
    if (!current) return;
    fill();
    current.onChange(current.speakers);
  });
}

/** The name shown for speaker `id`: its name, or "Speaker N" in the page's language. */
export function displayName(speakers, id) {
  const found = (speakers || []).find((speaker) => speaker.id === id);
  const name = found ? found.name : id;
  const match = DEFAULT.exec(name || '');
  return match && name === id ? t('speakers.default', { n: match[1] }) : name;
}

/** Show the rename form for a transcript (`result`: verbose_json) — or the reason there are no
 * speakers when they were asked for and not found. */
export function showSpeakers(jobId, result, onChange) {
  const speakers = Array.isArray(result.speakers) ? result.speakers : [];
  current = { jobId, speakers, onChange };
  $('#transcript-diarization').hidden = !result.diarization_error;
  $('#speakers-form').hidden = !speakers.length;
  fill();
}

export function hideSpeakers() {
  current = null;
  $('#speakers-form').hidden = true;
  $('#transcript-diarization').hidden = true;
  $('#speakers-fields').textContent = '';
  setStatus(null);
  showError($('#speakers-error'), null);
}

function fill() {
  const fields = $('#speakers-fields');
  const typed = new Map(Array.from(fields.querySelectorAll('input.speaker-name'))
    .map((input) => [input.dataset.speakerId, input.value]));
  fields.textContent = '';
  current.speakers.forEach((speaker, index) => {
    const id = `speaker-name-${index + 1}`;
    const label = el('label', { for: id });
    const shown = displayName(current.speakers, speaker.id);
    setText(label, 'speakers.nameLabel', { speaker: shown });
    const input = el('input', {
      id, type: 'text', class: 'speaker-name', maxlength: String(NAME_MAX), autocomplete: 'off',
      placeholder: displayName([], speaker.id), dataset: { speakerId: speaker.id },
    });
    input.value = typed.has(speaker.id) ? typed.get(speaker.id) : shownValue(speaker);
    fields.append(el('div', { class: 'field' }, label, input));
  });
}

/** An unnamed speaker's field is empty, so typing a name does not mean deleting one first. */
function shownValue(speaker) {
  return speaker.name === speaker.id && DEFAULT.test(speaker.id) ? '' : speaker.name;
}

async function save() {
  if (!current) return;
  const names = {};
  for (const input of $('#speakers-fields').querySelectorAll('input.speaker-name')) {
    const value = input.value.trim();
    const speaker = current.speakers.find((s) => s.id === input.dataset.speakerId);
    if (!speaker || value === shownValue(speaker)) continue;
    names[speaker.id] = value || speaker.id; // emptied: back to "Speaker N"
  }
  if (!Object.keys(names).length) {
    setStatus('speakers.unchanged');
    return;
  }
  const button = $('#speakers-save');
  const { jobId } = current;
  button.disabled = true;
  setStatus('speakers.saving');
  showError($('#speakers-error'), null);
  try {
    const answer = await patch(`/v1/jobs/${encodeURIComponent(jobId)}/speakers`, { names });
    if (!current || current.jobId !== jobId) return;
    const named = new Map((answer.speakers || []).map((s) => [s.id, s.name]));
    current.speakers = current.speakers.map((s) => ({ id: s.id, name: named.get(s.id) ?? s.name }));
    for (const input of $('#speakers-fields').querySelectorAll('input.speaker-name')) {
      const speaker = current.speakers.find((s) => s.id === input.dataset.speakerId);
      if (speaker) input.value = shownValue(speaker);
    }
    fill();
    current.onChange(current.speakers);
    setStatus('speakers.saved');
  } catch (error) {
    setStatus(null);
    if (error && error.code === 'invalid_option') showMessage($('#speakers-error'), 'speakers.empty');
    else showError($('#speakers-error'), error);
  } finally {
    button.disabled = false;
  }
}

function setStatus(key) {
  setTextOrClear($('#speakers-status'), key);
}

/** A segment's speaker label (null without speakers), shown where the speaker changes. */
export function speakerLabel(speakers, segment, previous) {
  const id = segment.speaker_id;
  if (!id) return null;
  const label = el('span', { class: 'segment-speaker', dataset: { speakerId: id } });
  label.textContent = displayName(speakers, id);
  label.hidden = Boolean(previous && previous.speaker_id === id);
  return label;
}

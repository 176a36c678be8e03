// Errors in words: the translated sentence for an error's code (strings "error.<code>"), the
// server's own message only when there is no sentence for the code. Never JSON.

import { el } from './dom.js';
import { has, setText, t } from './i18n.js';

/** Codes whose sentence is general: the server's message follows it as a detail. */
const WITH_DETAIL = new Set(['invalid_request', 'invalid_option', 'http_error', 'not_found']);

/** The server's words: ApiError.detail, or the message of a job's stored error. */
function serverMessage(error) {
  if (!error) return '';
  return ('detail' in error ? error.detail : error.message) || '';
}

function varsFor(error) {
  const vars = {};
  if (error && Number.isFinite(error.retryAfter)) vars.seconds = error.retryAfter;
  const id = /error id ([0-9a-f]+)/i.exec(serverMessage(error));
  if (id) vars.id = id[1];
  return vars;
}

function keyFor(error) {
  const code = (error && error.code) || 'unknown';
  const vars = varsFor(error);
  if (code === 'too_many_attempts' && vars.seconds === undefined) return ['error.too_many_attempts_later', vars];
  if (code === 'internal_error' && vars.id !== undefined) return ['error.internal_error_id', vars];
  if (has(`error.${code}`)) return [`error.${code}`, vars];
  return [null, vars];
}

/** The sentence for an error (or a job's {code, message}), as a string. */
export function errorText(error) {
  const [key, vars] = keyFor(error);
  if (key) return t(key, vars);
  return serverMessage(error) || t('error.unknown');
}

/**
 * Fill `node` (an alert) with the error's sentence and show it; the sentence follows language
 * switches. `error` null hides the node.
 */
export function showError(node, error) {
  if (!node) return;
  node.textContent = '';
  if (!error) {
    node.hidden = true;
    return;
  }
  const [key, vars] = keyFor(error);
  const line = el('span', {});
  const words = serverMessage(error);
  if (key) setText(line, key, vars);
  else if (words) line.textContent = words;
  else setText(line, 'error.unknown');
  node.append(line);
  if (key && WITH_DETAIL.has(error.code) && words) {
    node.append(el('span', { class: 'error-detail', lang: 'en', text: words }));
  }
  node.hidden = false;
}

/** Show a translated sentence (not from an error) in an alert. */
export function showMessage(node, key, vars) {
  node.textContent = '';
  node.append(setText(el('span'), key, vars));
  node.hidden = false;
}

// The page's only way to the server: same origin, the session cookie, X-CSRF-Token on changes.
//
// A 401 while signed in means the session ended: the request waits for the sign-in form (see
// auth.js, registered with onSessionExpired) and is then sent once more, with the new token.

import { state } from './state.js';

const CHANGES = new Set(['POST', 'PATCH', 'PUT', 'DELETE']);
let expiredHandler = null;
let generation = 0; // counts sign-ins: a 401 to a request sent before the last one is stale

/** auth.js calls this after a new sign-in. */
export function sessionRenewed() {
  generation += 1;
}

/** `handler()` shows the sign-in form and resolves once the user has signed in again. */
export function onSessionExpired(handler) {
  expiredHandler = handler;
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    /** The server's own message ('' when it sent none). */
    this.detail = message || '';
  }
}

function retryAfterOf(value) {
  if (!value) return null;
  const seconds = Number.parseInt(value, 10);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const when = Date.parse(value);
  return Number.isFinite(when) ? Math.max(0, Math.round((when - Date.now()) / 1000)) : null;
}

/** An ApiError from a status, the body's text and a Retry-After value. */
export function errorFrom(status, bodyText, retryAfter) {
  let code = null;
  let message = '';
  try {
    const body = JSON.parse(bodyText);
    if (body && body.error) {
      code = body.error.code || null;
      message = body.error.message || '';
    }
  } catch {
    /* not JSON: a proxy's page, say */
  }
  if (!code) {
    if (status === 413) code = 'too_large';
    else if (status === 401) code = 'unauthorized';
    else if (status === 403) code = 'forbidden';
    else if (status === 404) code = 'not_found';
    else if (status === 429) code = 'queue_full';
    else if (status >= 502 && status <= 504) code = 'unavailable';
    else code = 'http_error';
  }
  return new ApiError(status, code, message, retryAfterOf(retryAfter));
}

function headersFor(method, extra) {
  const headers = { Accept: 'application/json', ...extra };
  if (CHANGES.has(method) && state.session && state.session.csrf_token) {
    headers['X-CSRF-Token'] = state.session.csrf_token;
  }
  return headers;
}

function expired(status, options, attempt) {
  return status === 401 && options.auth !== false && state.session && attempt === 0 && expiredHandler;
}

/** After a 401: wait for a new sign-in, unless one happened while this request was out. */
async function renewed(sentIn) {
  if (sentIn === generation) await expiredHandler();
}

/**
 * Send a request. Options: `json` (a body sent as JSON), `body`, `headers`, `signal`,
 * `raw` (return the Response), `auth: false` (a 401 is an answer, not an ended session).
 * Returns the parsed JSON (or text, or null for 204); throws ApiError.
 */
export async function request(method, path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const extra = { ...(options.headers || {}) };
    let body = options.body;
    if (options.json !== undefined) {
      extra['Content-Type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    const sentIn = generation;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headersFor(method, extra),
        body,
        credentials: 'same-origin',
        cache: 'no-store',
        signal: options.signal,
      });
    } catch (error) {
      if (error && error.name === 'AbortError') throw error;
      throw new ApiError(0, 'network', String(error && error.message));
    }
    if (expired(response.status, options, attempt)) {
      await renewed(sentIn);
      continue;
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      throw errorFrom(response.status, text, response.headers.get('Retry-After'));
    }
    if (options.raw) return response;
    if (response.status === 204) return null;
    const type = response.headers.get('Content-Type') || '';
    return type.includes('json') ? response.json() : response.text();
  }
}

export const get = (path, options) => request('GET', path, options);
export const post = (path, json, options = {}) => request('POST', path, { ...options, json });
export const patch = (path, json, options = {}) => request('PATCH', path, { ...options, json });
export const del = (path, options) => request('DELETE', path, options);

/**
 * POST a form with upload progress (XMLHttpRequest: fetch reports none). `onProgress(loaded,
 * total)`; `signal` aborts. The same session-expiry rule as `request`: the form is sent again
 * once after a new sign-in.
 */
export async function upload(path, formData, { onProgress, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const sentIn = generation;
    const result = await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', path);
      for (const [name, value] of Object.entries(headersFor('POST', {}))) {
        xhr.setRequestHeader(name, value);
      }
      xhr.responseType = 'text';
      if (onProgress) {
        xhr.upload.addEventListener('progress', (event) => {
          onProgress(event.loaded, event.lengthComputable ? event.total : 0);
        });
      }
      xhr.addEventListener('load', () => resolve(xhr));
      xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'network error')));
      xhr.addEventListener('timeout', () => reject(new ApiError(0, 'network', 'timeout')));
      xhr.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      if (signal) {
        if (signal.aborted) {
          reject(new DOMException('aborted', 'AbortError'));
          return;
        }
        signal.addEventListener('abort', () => xhr.abort(), { once: true });
      }
      xhr.send(formData);
    });
    if (expired(result.status, {}, attempt)) {
      await renewed(sentIn);
      continue;
    }
    if (result.status < 200 || result.status >= 300) {
      throw errorFrom(result.status, result.responseText, result.getResponseHeader('Retry-After'));
    }
    try {
      return JSON.parse(result.responseText);
    } catch {
      return null;
    }
  }
}

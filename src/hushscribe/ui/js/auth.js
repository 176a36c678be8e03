// Signing in and out. The sign-in form stands alone before the first sign-in; when a session ends
// later (any 401), the same form opens over the page, which keeps its state, and the interrupted
// requests are sent again once the user has signed in (api.js waits on `expiredPrompt`).

import { $ } from './dom.js';
import { onSessionExpired, request, sessionRenewed } from './api.js';
import { showError, showMessage } from './errors.js';
import { state } from './state.js';

let mode = 'initial';
let waiting = null;
let signedIn = null;
let focusBefore = null;

export function initAuth({ onSignedIn }) {
  signedIn = onSignedIn;
  $('#login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  $('#logout').addEventListener('click', logout);
  onSessionExpired(expiredPrompt);
}

/** The current session, or null when not signed in (401). */
export async function loadSession() {
  try {
    return await request('GET', '/v1/auth/session', { auth: false });
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

/** The first sign-in: the form alone, the page's places hidden. */
export function showSignIn() {
  mode = 'initial';
  const screen = $('#login-screen');
  screen.classList.remove('overlay');
  screen.removeAttribute('role');
  screen.removeAttribute('aria-modal');
  $('#login-expired').hidden = true;
  $('#main').hidden = true;
  screen.hidden = false;
  $('#login-username').focus();
}

function expiredPrompt() {
  if (waiting) return waiting.promise;
  let resolve;
  const promise = new Promise((done) => {
    resolve = done;
  });
  waiting = { promise, resolve };
  mode = 'expired';
  focusBefore = document.activeElement;
  const screen = $('#login-screen');
  screen.classList.add('overlay');
  screen.setAttribute('role', 'dialog');
  screen.setAttribute('aria-modal', 'true');
  screen.setAttribute('aria-labelledby', 'login-title');
  $('#login-expired').hidden = false;
  showError($('#login-error'), null);
  $('#app').inert = true;
  screen.hidden = false;
  const name = $('#login-username');
  if (state.session) name.value = state.session.user.username;
  $('#login-password').value = '';
  (name.value ? $('#login-password') : name).focus();
  return promise;
}

async function submit() {
  const name = $('#login-username');
  const password = $('#login-password');
  const alert = $('#login-error');
  const button = $('#login-submit');
  if (!name.value.trim() || !password.value) {
    showMessage(alert, 'auth.missing');
    (name.value.trim() ? password : name).focus();
    return;
  }
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    const session = await request('POST', '/v1/auth/login', {
      json: { username: name.value.trim(), password: password.value },
      auth: false,
    });
    showError(alert, null);
    password.value = '';
    if (mode === 'expired') {
      resume(session);
    } else {
      $('#login-screen').hidden = true;
      $('#main').hidden = false;
      signedIn(session);
    }
  } catch (error) {
    showError(alert, error);
    password.value = '';
    password.focus();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

function resume(session) {
  const before = state.session && state.session.user.username;
  if (before && before !== session.user.username) {
    // Someone else signed in: nothing of the previous user's page may stay.
    window.location.reload();
    return;
  }
  state.session = session;
  sessionRenewed();
  const screen = $('#login-screen');
  screen.hidden = true;
  screen.classList.remove('overlay');
  $('#app').inert = false;
  mode = 'initial';
  if (focusBefore && document.contains(focusBefore)) focusBefore.focus();
  const pending = waiting;
  waiting = null;
  if (pending) pending.resolve();
}

async function logout() {
  try {
    await request('POST', '/v1/auth/logout', { auth: false });
  } catch {
    /* the session may be gone already; the page is cleared below either way */
  }
  state.session = null;
  window.location.replace(window.location.pathname);
}

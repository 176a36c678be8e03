// The page starts here: strings, session, then the places of the top bar (hash routes:
// #/transcribe, #/live, #/jobs, #/jobs/<id> for a transcript, #/admin, #/audit).

import { $, $$, el } from './dom.js';
import { getLang, initialLang, onLangChange, setLang, setText, t } from './i18n.js';
import { initAuth, loadSession, showSignIn } from './auth.js';
import { showError, showMessage } from './errors.js';
import { can, role, state } from './state.js';
import { initTranscribe, loadModels, sendFile } from './transcribe.js';
import { initRecorder } from './recorder.js';
import { initLive, openLive } from './live.js';
import { addJob, initJobs, refreshJobs, startJobs } from './jobs.js';
import { initTranscript, leaveTranscript, openTranscript } from './transcript.js';
import { initAdmin, openAdmin } from './admin.js';
import { initAudit, openAudit } from './audit.js';

const PLACES = [
  { name: 'transcribe', key: 'nav.transcribe', allowed: () => can('transcribe') },
  { name: 'live', key: 'nav.live', allowed: () => can('transcribe') },
  { name: 'jobs', key: 'nav.jobs', allowed: () => can('jobs:read') },
  { name: 'admin', key: 'nav.admin', allowed: () => role() === 'admin' },
  { name: 'audit', key: 'nav.audit', allowed: () => can('audit:read') },
];
const VIEW_IDS = {
  transcribe: 'view-transcribe',
  live: 'view-live',
  jobs: 'view-jobs',
  transcript: 'transcript',
  admin: 'view-admin',
  audit: 'view-audit',
};

let current = null; // {view, param}
let started = false;

function allowedPlaces() {
  return PLACES.filter((place) => place.allowed());
}

function parseHash() {
  const hash = window.location.hash;
  if (!hash.startsWith('#/')) return null;
  const parts = hash.slice(2).split('/').filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  if (parts[0] === 'jobs' && parts[1]) return { view: 'transcript', param: parts[1] };
  return { view: parts[0] || '', param: null };
}

function route() {
  if (!started) return;
  let wanted = parseHash();
  if (!wanted && current) return; // e.g. "#main" from the skip link: stay where we are
  if (!wanted) wanted = { view: '', param: null };
  const places = allowedPlaces();
  let target = wanted;
  const place = wanted.view === 'transcript' ? 'jobs' : wanted.view;
  if (!places.some((p) => p.name === place)) {
    target = places.length ? { view: places[0].name, param: null } : null;
  }
  show(target);
}

function show(target) {
  const before = current;
  if (before && before.view === 'transcript' && (!target || target.view !== 'transcript')) {
    leaveTranscript();
  }
  current = target;
  for (const section of $$('#main > .view')) section.hidden = true;
  if (!target) {
    showMessage($('#app-error'), 'app.noPlaces');
    return;
  }
  const section = document.getElementById(VIEW_IDS[target.view]);
  section.hidden = false;
  const navName = target.view === 'transcript' ? 'jobs' : target.view;
  for (const link of $$('#nav-list a')) {
    if (link.dataset.nav === navName) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  updateTitle();
  if (target.view === 'jobs') refreshJobs();
  if (target.view === 'live') openLive();
  if (target.view === 'admin') openAdmin();
  if (target.view === 'audit') openAudit();
  if (target.view === 'transcript') openTranscript(target.param);
  const moved = before && (before.view !== target.view || before.param !== target.param);
  if (moved) {
    const heading = section.querySelector('.view-title');
    if (heading) heading.focus({ preventScroll: false });
    window.scrollTo(0, 0);
  }
}

function updateTitle() {
  const title = document.querySelector('title');
  if (!current || !started) {
    setText(title, 'app.title');
    return;
  }
  const key = current.view === 'transcript' ? 'transcript.pageTitle' : `nav.${current.view}`;
  setText(title, 'app.titleWith', { place: t(key) });
}

function buildNav() {
  const list = $('#nav-list');
  list.textContent = '';
  for (const place of allowedPlaces()) {
    list.append(el('li', {}, el('a', { href: `#/${place.name}`, dataset: { nav: place.name }, i18n: place.key })));
  }
  $('#nav').hidden = false;
}

function renderWhoami() {
  const who = $('#whoami');
  if (!state.session) {
    who.hidden = true;
    return;
  }
  const { username, role: userRole } = state.session.user;
  const roleKey = ['admin', 'user', 'auditor'].includes(userRole) ? `role.${userRole}` : null;
  who.textContent = t('app.whoami', { name: username, role: roleKey ? t(roleKey) : userRole });
  who.hidden = false;
}

/** Signed in: build the top bar for this user's role and open the place the address names. */
function start(session) {
  state.session = session;
  started = true;
  $('#boot-message').hidden = true;
  $('#main').hidden = false;
  buildNav();
  renderWhoami();
  $('#logout').hidden = false;
  if (can('transcribe')) loadModels();
  if (can('jobs:read')) startJobs();
  route();
}

function syncLangSwitch(code) {
  // The button names the other language, in that language.
  $('#lang-switch').lang = code === 'zh' ? 'en' : 'zh';
}

async function boot() {
  try {
    await setLang(initialLang());
  } catch {
    await setLang('en');
  }
  syncLangSwitch(getLang());
  onLangChange((code) => {
    syncLangSwitch(code);
    for (const region of $$('#live, #jobs-live')) region.textContent = '';
    renderWhoami();
    updateTitle();
  });
  $('#lang-switch').addEventListener('click', async () => {
    await setLang(getLang() === 'zh' ? 'en' : 'zh', { remember: true });
  });
  $('.skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    $('#main').focus();
  });

  initAuth({ onSignedIn: start });
  initTranscribe({
    onJobCreated: addJob,
    onAllSent: ({ failed }) => {
      if (!failed && current && current.view === 'transcribe') window.location.hash = '#/jobs';
    },
  });
  initRecorder({ onSend: sendFile });
  initLive({ onJobCreated: addJob });
  initJobs();
  initTranscript();
  initAdmin();
  initAudit();
  window.addEventListener('hashchange', route);

  let session = null;
  try {
    session = await loadSession();
  } catch (error) {
    $('#boot-message').hidden = true;
    showSignIn();
    showError($('#login-error'), error);
    return;
  }
  $('#boot-message').hidden = true;
  if (session) start(session);
  else showSignIn();
}

boot();

// Administration: users, API keys (every user's), models (verify their files) and the service's
// status. Loaded when the place is opened; tables are drawn again from the last answers when the
// language changes.

import { $, announce, copyText, el } from './dom.js';
import { del, get, patch, post } from './api.js';
import { errorText, showError, showMessage } from './errors.js';
import { dateNode, formatBytes, formatNumber, onLangChange, setAttrs, setText, t } from './i18n.js';
import { state } from './state.js';

const ROLES = ['user', 'admin', 'auditor'];
const SCOPE_KEYS = {
  transcribe: 'scope.transcribe',
  'jobs:read': 'scope.jobsRead',
  admin: 'scope.admin',
  'audit:read': 'scope.auditRead',
  metrics: 'scope.metrics',
};
const USERNAME = /^[a-z0-9][a-z0-9._@-]{0,127}$/i;

let users = null;
let keys = null;
let models = null;
let status = null;
const verified = new Map(); // model id → {state: 'checking'|'ok'|'bad'|'error', problems, error}

export function initAdmin() {
  $('#users-table tbody').addEventListener('click', onUsersClick);
  $('#users-table tbody').addEventListener('change', onRoleChange);
  $('#user-add-form').addEventListener('submit', addUser);
  $('#keys-table tbody').addEventListener('click', onKeysClick);
  $('#key-create-form').addEventListener('submit', createKey);
  $('#key-created-copy').addEventListener('click', async () => {
    try {
      await copyText($('#key-created-value').textContent);
      setText($('#key-created-status'), 'keys.copied');
    } catch {
      setText($('#key-created-status'), 'transcript.copyFailed');
    }
  });
  $('#key-created-done').addEventListener('click', () => {
    $('#key-created-value').textContent = '';
    $('#key-created-status').textContent = '';
    $('#key-created').hidden = true;
    $('#key-name').focus();
  });
  $('#models-table tbody').addEventListener('click', onModelsClick);
  $('#status-refresh').addEventListener('click', loadStatus);
  onLangChange(() => {
    if (users) renderUsers();
    if (keys) renderKeys();
    if (models) renderModels();
    if (status) renderStatus();
  });
}

/** Load everything the place shows. */
export function openAdmin() {
  loadUsers();
  loadKeys();
  loadModels();
  loadStatus();
}

/** A table cell labelled for the narrow (stacked) layout; `content`: nodes or a string. */
function td(labelKey, content, className) {
  const body = el('div', { class: `cell-body${className ? ` ${className}` : ''}` });
  for (const part of [].concat(content)) {
    if (part === null || part === undefined || part === false) continue;
    body.append(part instanceof Node ? part : document.createTextNode(String(part)));
  }
  return el('td', { 'data-label': t(labelKey), class: labelKey.endsWith('.actions') ? 'cell-actions' : null }, body);
}

const me = () => (state.session ? state.session.user.username : '');

function roleName(role) {
  return ROLES.includes(role) ? t(`role.${role}`) : role;
}

// --- users -------------------------------------------------------------------------------------

async function loadUsers() {
  try {
    const answer = await get('/v1/users');
    users = (answer && answer.data) || [];
    showError($('#users-error'), null);
    renderUsers();
  } catch (error) {
    showError($('#users-error'), error);
  }
}

function renderUsers() {
  const body = $('#users-table tbody');
  const focused = document.activeElement && body.contains(document.activeElement)
    ? [document.activeElement.closest('tr').dataset.username, document.activeElement.className] : null;
  const fragment = document.createDocumentFragment();
  for (const user of users) {
    const self = user.username === me();
    const select = el('select', { class: 'user-role', disabled: self });
    setAttrs(select, { 'aria-label': 'users.roleOf' }, { name: user.username });
    for (const role of ROLES) select.append(el('option', { value: role, text: roleName(role) }));
    if (!ROLES.includes(user.role)) select.append(el('option', { value: user.role, text: user.role }));
    select.value = user.role;
    const toggle = el('button', {
      type: 'button',
      class: `button button-small ${user.disabled ? 'button-secondary' : 'button-danger'} user-disable`,
      disabled: self,
      text: t(user.disabled ? 'users.enable' : 'users.disable'),
      'aria-label': t(user.disabled ? 'users.enableLabel' : 'users.disableLabel', { name: user.username }),
    });
    const source = user.source === 'local' || user.source === 'ldap' ? t(`users.source.${user.source}`) : user.source;
    fragment.append(el('tr', { dataset: { username: user.username, disabled: user.disabled ? 'true' : 'false' } },
      td('users.col.name', [el('strong', { text: user.username }), self ? el('span', { class: 'muted', text: ` ${t('users.you')}` }) : null]),
      td('users.col.role', select),
      td('users.col.source', source || '—'),
      td('users.col.state', t(user.disabled ? 'users.disabled' : 'users.active'), `state ${user.disabled ? 'state-off' : 'state-ok'}`),
      td('users.col.lastLogin', dateNode('time', user.last_login_at)),
      td('users.col.actions', toggle)));
  }
  body.replaceChildren(fragment);
  if (focused) {
    const row = Array.from(body.rows).find((r) => r.dataset.username === focused[0]);
    const target = row && row.querySelector(focused[1].includes('user-role') ? 'select' : 'button');
    if (target) target.focus();
  }
  fillKeyUsers();
}

async function onUsersClick(event) {
  const button = event.target.closest('button.user-disable');
  if (!button) return;
  const name = button.closest('tr').dataset.username;
  const user = users.find((u) => u.username === name);
  if (!user) return;
  button.disabled = true;
  try {
    const changed = await patch(`/v1/users/${encodeURIComponent(name)}`, { disabled: !user.disabled });
    Object.assign(user, changed || { disabled: !user.disabled });
    showError($('#users-error'), null);
    announce(t(user.disabled ? 'users.disabledNow' : 'users.enabledNow', { name }));
    renderUsers();
    const row = Array.from($('#users-table tbody').rows).find((r) => r.dataset.username === name);
    if (row) row.querySelector('button.user-disable').focus();
    if (keys) loadKeys();
  } catch (error) {
    button.disabled = false;
    showError($('#users-error'), error);
  }
}

async function onRoleChange(event) {
  const select = event.target.closest('select.user-role');
  if (!select) return;
  const name = select.closest('tr').dataset.username;
  const user = users.find((u) => u.username === name);
  if (!user) return;
  const role = select.value;
  select.setAttribute('aria-busy', 'true');
  try {
    const changed = await patch(`/v1/users/${encodeURIComponent(name)}`, { role });
    Object.assign(user, changed || { role });
    showError($('#users-error'), null);
    announce(t('users.roleChanged', { name, role: roleName(role) }));
  } catch (error) {
    select.value = user.role;
    showError($('#users-error'), error);
  } finally {
    renderUsers();
  }
}

function passwordProblem(password) {
  if (password.length < 12) return 'users.passwordShort';
  if (new Set(password).size < 5) return 'users.passwordSimple';
  return null;
}

async function addUser(event) {
  event.preventDefault();
  const name = $('#user-add-name');
  const password = $('#user-add-password');
  const alert = $('#user-add-error');
  name.removeAttribute('aria-invalid');
  password.removeAttribute('aria-invalid');
  const username = name.value.trim();
  if (!USERNAME.test(username)) {
    name.setAttribute('aria-invalid', 'true');
    showMessage(alert, 'users.nameInvalid');
    name.focus();
    return;
  }
  const problem = passwordProblem(password.value);
  if (problem) {
    password.setAttribute('aria-invalid', 'true');
    showMessage(alert, problem);
    password.focus();
    return;
  }
  const button = $('#user-add-submit');
  button.disabled = true;
  try {
    await post('/v1/users', { username, password: password.value, role: $('#user-add-role').value });
    showError(alert, null);
    name.value = '';
    password.value = '';
    $('#user-add-role').value = 'user';
    announce(t('users.added', { name: username.toLowerCase() }));
    await loadUsers();
    name.focus();
  } catch (error) {
    showError(alert, error);
  } finally {
    button.disabled = false;
  }
}

// --- keys --------------------------------------------------------------------------------------

async function loadKeys() {
  try {
    const answer = await get('/v1/keys?user=*');
    keys = (answer && answer.data) || [];
    showError($('#keys-error'), null);
    renderKeys();
  } catch (error) {
    showError($('#keys-error'), error);
  }
}

function scopesText(scopes) {
  if (!scopes || !scopes.length) return '—';
  return scopes.map((scope) => (SCOPE_KEYS[scope] ? t(SCOPE_KEYS[scope]) : scope)).join(t('list.separator'));
}

function renderKeys() {
  const body = $('#keys-table tbody');
  const fragment = document.createDocumentFragment();
  if (!keys.length) {
    fragment.append(el('tr', {}, el('td', { colspan: '9', class: 'muted', text: t('keys.none') })));
  }
  for (const key of keys) {
    const stateClass = key.state === 'active' ? 'state-ok' : key.state === 'revoked' ? 'state-bad' : 'state-off';
    const stateText = ['active', 'revoked', 'expired'].includes(key.state) ? t(`keys.state.${key.state}`) : key.state;
    let actions = null;
    if (key.state === 'active') {
      actions = el('button', {
        type: 'button',
        class: 'button button-small button-danger key-revoke',
        text: t('keys.revoke'),
        'aria-label': t('keys.revokeLabel', { name: key.name }),
      });
    }
    const never = () => el('span', { class: 'muted', text: t('keys.never') });
    fragment.append(el('tr', { dataset: { keyId: key.id, state: key.state } },
      td('keys.col.name', key.name),
      td('keys.col.user', key.user || '—'),
      td('keys.col.prefix', el('code', { text: `${key.prefix}…` })),
      td('keys.col.scopes', scopesText(key.scopes)),
      td('keys.col.state', stateText, `state ${stateClass}`),
      td('keys.col.created', dateNode('time', key.created_at)),
      td('keys.col.expires', key.expires_at ? dateNode('time', key.expires_at) : never()),
      td('keys.col.lastUsed', key.last_used_at ? dateNode('time', key.last_used_at) : never()),
      td('keys.col.actions', actions)));
  }
  body.replaceChildren(fragment);
}

function fillKeyUsers() {
  const select = $('#key-user');
  const chosen = select.value || me();
  select.textContent = '';
  for (const user of (users || []).filter((u) => !u.disabled)) {
    const label = t('keys.userOption', { name: user.username, role: roleName(user.role) });
    select.append(el('option', { value: user.username, text: label }));
  }
  if (Array.from(select.options).some((o) => o.value === chosen)) select.value = chosen;
}

async function onKeysClick(event) {
  const button = event.target.closest('button.key-revoke');
  if (!button) return;
  const id = button.closest('tr').dataset.keyId;
  const key = keys.find((k) => k.id === id);
  button.disabled = true;
  try {
    await del(`/v1/keys/${encodeURIComponent(id)}`);
    showError($('#keys-error'), null);
    announce(t('keys.revoked', { name: key ? key.name : id }));
    await loadKeys();
    $('#keys-title').focus();
  } catch (error) {
    button.disabled = false;
    showError($('#keys-error'), error);
  }
}

async function createKey(event) {
  event.preventDefault();
  const name = $('#key-name');
  const alert = $('#key-create-error');
  name.removeAttribute('aria-invalid');
  if (!name.value.trim()) {
    name.setAttribute('aria-invalid', 'true');
    showMessage(alert, 'keys.nameMissing');
    name.focus();
    return;
  }
  const body = { name: name.value.trim() };
  const user = $('#key-user').value;
  if (user) body.user = user;
  const scopes = Array.from($('#key-scopes').selectedOptions).map((option) => option.value);
  if (scopes.length) body.scopes = scopes;
  const expires = $('#key-expires').value;
  if (expires) body.expires_in = expires;
  const button = $('#key-create-submit');
  button.disabled = true;
  try {
    const made = await post('/v1/keys', body);
    showError(alert, null);
    name.value = '';
    for (const option of $('#key-scopes').options) option.selected = false;
    $('#key-expires').value = '';
    $('#key-created-value').textContent = made.key;
    $('#key-created-status').textContent = '';
    $('#key-created').hidden = false;
    $('#key-created-copy').focus();
    loadKeys();
  } catch (error) {
    showError(alert, error);
  } finally {
    button.disabled = false;
  }
}

// --- models ------------------------------------------------------------------------------------

async function loadModels() {
  try {
    const answer = await get('/v1/models');
    models = (answer && answer.data) || [];
    showError($('#models-error'), null);
    renderModels();
  } catch (error) {
    showError($('#models-error'), error);
  }
}

function modelState(id) {
  const check = verified.get(id);
  const node = el('div', { class: 'model-state' });
  if (!check) {
    node.classList.add('state-off');
    node.textContent = t('models.unchecked');
  } else if (check.state === 'checking') {
    node.textContent = t('models.checking');
  } else if (check.state === 'ok') {
    node.classList.add('state-ok');
    node.textContent = t('models.ok');
  } else if (check.state === 'bad') {
    node.classList.add('state-bad');
    node.append(t('models.bad'));
    const list = el('ul', { class: 'model-problems', lang: 'en' });
    for (const problem of check.problems || []) list.append(el('li', { text: String(problem) }));
    node.append(list);
  } else {
    node.classList.add('state-bad');
    node.textContent = errorText(check.error);
  }
  return node;
}

function renderModels() {
  const body = $('#models-table tbody');
  const fragment = document.createDocumentFragment();
  if (!models.length) {
    fragment.append(el('tr', {}, el('td', { colspan: '6', class: 'muted', text: t('models.none') })));
  }
  for (const model of models) {
    const sha = model.sha256 ? String(model.sha256) : '';
    const checking = verified.get(model.id) && verified.get(model.id).state === 'checking';
    fragment.append(el('tr', { dataset: { model: model.id } },
      td('models.col.name', el('strong', { text: model.id })),
      td('models.col.languages', t(model.multilingual === false ? 'models.englishOnly' : 'models.multilingual')),
      td('models.col.size', model.bytes ? formatBytes(model.bytes) : '—', 'num'),
      td('models.col.checksum', sha ? el('code', { text: `${sha.slice(0, 12)}…`, title: sha }) : '—'),
      td('models.col.state', modelState(model.id)),
      td('models.col.actions', el('button', {
        type: 'button',
        class: 'button button-small button-secondary model-verify',
        disabled: checking,
        text: t('models.verify'),
        'aria-label': t('models.verifyLabel', { name: model.id }),
      }))));
  }
  body.replaceChildren(fragment);
}

async function onModelsClick(event) {
  const button = event.target.closest('button.model-verify');
  if (!button) return;
  const id = button.closest('tr').dataset.model;
  verified.set(id, { state: 'checking' });
  renderModels();
  try {
    const answer = await post(`/v1/models/${encodeURIComponent(id)}/verify`, {});
    verified.set(id, answer && answer.ok
      ? { state: 'ok' }
      : { state: 'bad', problems: (answer && answer.problems) || [] });
  } catch (error) {
    verified.set(id, { state: 'error', error });
  }
  renderModels();
  const check = verified.get(id);
  announce(`${id}: ${check.state === 'ok' ? t('models.ok') : check.state === 'bad' ? t('models.bad') : errorText(check.error)}`);
  const again = Array.from($('#models-table tbody').rows).find((r) => r.dataset.model === id);
  if (again) again.querySelector('button.model-verify').focus();
}

// --- status ------------------------------------------------------------------------------------

async function loadStatus() {
  try {
    status = await get('/v1/status');
    showError($('#status-error'), null);
    renderStatus();
  } catch (error) {
    showError($('#status-error'), error);
  }
}

function gpuText(gpu) {
  if (typeof gpu === 'string') return gpu;
  if (!gpu || typeof gpu !== 'object') return String(gpu);
  const name = gpu.name || gpu.model || gpu.id || '';
  const total = gpu.memory_total || gpu.memory_total_bytes || gpu.memory;
  return total ? t('status.gpuEntry', { name, memory: formatBytes(total) }) : String(name);
}

function renderStatus() {
  const body = $('#status-body');
  const workers = Array.isArray(status.workers) ? status.workers : [];
  const workerList = workers.length
    ? el('ul', {}, workers.map((worker) => el('li', {
      text: t('status.worker', {
        id: worker.id,
        host: worker.host || '—',
        models: Array.isArray(worker.models) && worker.models.length ? worker.models.join(', ') : '—',
      }),
    })))
    : el('p', { class: 'state state-bad', text: t('status.noWorkers') });
  const counts = status.jobs || {};
  const queue = el('dl', {});
  for (const name of ['queued', 'running', 'done', 'failed', 'cancelled']) {
    queue.append(el('dt', { text: t(`jobs.status.${name}`) }),
      el('dd', { text: formatNumber(Number(counts[name]) || 0) }));
  }
  let gpu;
  if (status.gpu === undefined) gpu = el('p', { class: 'muted', text: t('status.gpuUnknown') });
  else if (!status.gpu || (Array.isArray(status.gpu) && !status.gpu.length)) {
    gpu = el('p', { text: t('status.noGpu') });
  } else {
    const list = Array.isArray(status.gpu) ? status.gpu : [status.gpu];
    gpu = el('ul', {}, list.map((entry) => el('li', { text: gpuText(entry) })));
  }
  body.replaceChildren(
    el('div', {},
      el('h3', { text: t('status.workers', { count: workers.length }) }),
      workerList),
    el('div', {}, el('h3', { text: t('status.queue') }), queue),
    el('div', {},
      el('h3', { text: t('status.gpu') }),
      gpu,
      el('h3', { class: 'status-sub', text: t('status.defaultModel') }),
      el('p', { text: status.default_model || '—' })),
  );
}

// What the page remembers while it is open. Nothing here is written to storage.

export const state = {
  /** The session: {user: {username, role, auth}, scopes: [...], csrf_token} or null. */
  session: null,
  /** Files uploaded in this page session, by job id: used to play a transcript's audio locally. */
  files: new Map(),
};

export function can(scope) {
  return Boolean(state.session && state.session.scopes && state.session.scopes.includes(scope));
}

export function role() {
  return state.session ? state.session.user.role : null;
}

// Talking to the api: every request carries the bearer token (when there is one), a 401 asks
// for the token once (one dialog however many requests were refused at the same moment) and
// retries, errors become ApiError with the problem document (RFC 9457) and its `errors` list.

const TOKEN_KEY = 'ipfixweb.token';

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

function setToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lives as long as this page
  }
  memoryToken = t;
}
let memoryToken = '';

export function token() {
  return getToken() || memoryToken;
}

export function authHeaders(extra = {}) {
  const t = token();
  return t ? {...extra, Authorization: `Bearer ${t}`} : {...extra};
}

export function forgetToken() {
  setToken('');
}

// One dialog for every request refused at the same time.
let pending = null;
export function askToken(message) {
  if (pending) return pending;
  pending = new Promise((resolve) => {
    const dialog = document.getElementById('token-dialog');
    const form = document.getElementById('token-form');
    const input = document.getElementById('token-input');
    const why = document.getElementById('token-why');
    why.textContent = message || 'The api needs a bearer token.';
    input.value = '';
    const done = (value) => {
      form.removeEventListener('submit', onSubmit);
      dialog.removeEventListener('cancel', onCancel);
      document.getElementById('token-cancel').removeEventListener('click', onCancel);
      if (dialog.open) dialog.close();
      pending = null;
      resolve(value);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const v = input.value.trim();
      if (!v) return;
      setToken(v);
      done(v);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(null);
    };
    form.addEventListener('submit', onSubmit);
    dialog.addEventListener('cancel', onCancel);
    document.getElementById('token-cancel').addEventListener('click', onCancel);
    dialog.showModal();
    input.focus();
  });
  return pending;
}

// fetch() with the token; on 401 asks for a token and tries again (until the user cancels).
export async function apiFetch(path, opts = {}) {
  for (;;) {
    const headers = authHeaders(opts.headers || {});
    const res = await fetch(path, {...opts, headers});
    if (res.status !== 401) return res;
    const had = token();
    const t = await askToken(had ? 'The api refused this token. Enter another one.'
                                 : 'The api needs a bearer token (IPFIXWEB_API_TOKENS).');
    if (!t) return res;
  }
}

export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super((problem && (problem.detail || problem.title)) || fallback || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || null;
    this.errors = (problem && Array.isArray(problem.errors)) ? problem.errors : [];
  }
}

async function readProblem(res) {
  const text = await res.text().catch(() => '');
  try {
    return JSON.parse(text);
  } catch {
    return {detail: text.slice(0, 300) || `${res.status} ${res.statusText}`};
  }
}

// JSON in, JSON out: resolves with {status, body, headers}; rejects with ApiError for 4xx/5xx.
export async function apiJSON(path, {method = 'GET', body, headers = {}, signal} = {}) {
  const opts = {method, headers: {Accept: 'application/json', ...headers}, signal};
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers['Content-Type'] = 'application/json';
  }
  const res = await apiFetch(path, opts);
  if (!res.ok) {
    const p = await readProblem(res);
    if (res.status === 403) p.detail = (p.detail || 'forbidden') + ' (this token\'s role may not do this)';
    throw new ApiError(res.status, p);
  }
  const text = await res.text();
  return {status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers};
}

export const get = (path, opts) => apiJSON(path, opts).then((r) => r.body);

// A URL with query parameters (empty values left out).
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {}))
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// Downloads a file. Without a token a plain link does it (the browser streams the file to
// disk); with one the link cannot carry the header, so the file is fetched into a Blob (held
// in memory whole, as large as the file) and saved from an object URL.
export async function download(url, filename) {
  if (!token()) {
    const a = document.createElement('a');
    a.href = url;
    if (filename) a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    return;
  }
  const res = await apiFetch(url);
  if (!res.ok) throw new ApiError(res.status, await readProblem(res));
  const name = filename || filenameOf(res) || 'download';
  const blob = await res.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60000);
}

function filenameOf(res) {
  const cd = res.headers.get('Content-Disposition') || '';
  const m = /filename="([^"]*)"/.exec(cd);
  return m ? m[1] : '';
}

// Whether a download needs fetch→Blob (a token is in use): the views say so next to the links.
export const downloadsBuffered = () => Boolean(token());

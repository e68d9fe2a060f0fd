// A tus 1.0.0 client (docs/uploads.md) for one file: creation (POST), PATCH chunks of 8 MiB
// at the upload's offset, HEAD for the offset after a failure, retries with growing delays.
// The upload's URL is kept in localStorage under the file's name, size and modification time,
// so the same file picked again, after a reload or a broken connection, goes on from where
// the server has it instead of starting over.
//
// PATCH goes through XMLHttpRequest (fetch() reports no upload progress); the rest through
// fetch(). Both are same-origin (connect-src 'self').

import {ApiError, apiFetch, askToken, authHeaders, token} from './api.js';
import {sleep} from './util.js';

const TUS = {'Tus-Resumable': '1.0.0'};
export const CHUNK = 8 * 1024 * 1024;
const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000];

export function storageKey(file) {
  return `ipfixweb.tus:${file.name}:${file.size}:${file.lastModified}`;
}

function b64(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

async function problemOf(res) {
  const text = await res.text().catch(() => '');
  try {
    return JSON.parse(text);
  } catch {
    return {detail: text || `HTTP ${res.status}`};
  }
}

// Transient: worth trying again from the server's offset.
const transient = (status) => status === 0 || status === 409 || status === 423 || status === 460 ||
                              status === 429 || status >= 500 && status !== 507;

export class TusUpload {
  // onProgress(sentBytes, totalBytes), onStatus(text)
  constructor(file, {endpoint = '/api/v1/uploads', chunkSize = CHUNK, onProgress, onStatus} = {}) {
    this.file = file;
    this.endpoint = endpoint;
    this.chunkSize = chunkSize;
    this.onProgress = onProgress || (() => {});
    this.onStatus = onStatus || (() => {});
    this.url = null;
    this.offset = 0;
    this.xhr = null;
    this.stopped = false;
    this.resumedFrom = null;  // the offset a stored upload went on from
    this.recoveries = 0;      // times it went on after a failed PATCH
  }

  // Resolves with the capture ({ref, sha256, name, ...}); rejects with ApiError (refused) or
  // an Error named 'AbortError' (pause()).
  async start() {
    this.stopped = false;
    const key = storageKey(this.file);
    let stored = null;
    try {
      stored = localStorage.getItem(key);
    } catch {
      stored = null;
    }
    if (stored && !this.url) {
      const offset = await this.headOffset(stored);
      if (offset !== null) {
        this.url = stored;
        this.offset = offset;
        this.resumedFrom = offset;
        this.onStatus(offset > 0 ? `resuming at ${offset} of ${this.file.size} bytes` : 'resuming');
      } else {
        localStorage.removeItem(key);
      }
    }
    if (!this.url) await this.create(key);
    let attempt = 0;
    while (this.offset < this.file.size) {
      if (this.stopped) throw abortError();
      this.onProgress(this.offset, this.file.size);
      const end = Math.min(this.file.size, this.offset + this.chunkSize);
      const r = await this.patch(this.file.slice(this.offset, end));
      if (this.stopped) throw abortError();
      if (r.status === 204) {
        this.offset = Number(r.offset);
        attempt = 0;
        continue;
      }
      if (r.status === 404 || r.status === 410) {
        // Expired or removed: start over once.
        localStorage.removeItem(key);
        this.url = null;
        this.offset = 0;
        this.onStatus('the server forgot the upload; starting over');
        await this.create(key);
        continue;
      }
      if (r.status === 401 && await askToken('Uploading needs a bearer token.')) continue;
      if (!transient(r.status) || attempt >= RETRY_DELAYS.length) {
        if (!transient(r.status)) localStorage.removeItem(key);
        throw new ApiError(r.status, r.problem, r.status === 0 ? 'the connection failed' : '');
      }
      const wait = RETRY_DELAYS[attempt++];
      this.onStatus(`connection problem (${r.status || 'network'}); retrying in ${wait / 1000} s`);
      await sleep(wait);
      if (this.stopped) throw abortError();
      const offset = await this.headOffset(this.url);
      if (offset === null) continue;  // the PATCH above tells 404 next time
      this.offset = offset;
      this.recoveries++;
      this.onStatus(`resuming at ${offset} of ${this.file.size} bytes`);
    }
    this.onProgress(this.file.size, this.file.size);
    return this.capture();
  }

  pause() {
    this.stopped = true;
    this.xhr?.abort();
  }

  async create(key) {
    const meta = `filename ${b64(this.file.name)}`;
    const res = await apiFetch(this.endpoint, {
      method: 'POST',
      headers: {...TUS, 'Upload-Length': String(this.file.size), 'Upload-Metadata': meta},
    });
    if (res.status !== 201) throw new ApiError(res.status, await problemOf(res));
    this.url = new URL(res.headers.get('Location'), location.href).pathname;
    this.offset = 0;
    try {
      localStorage.setItem(key, this.url);
    } catch {
      // no storage: this upload cannot be resumed after a reload, only within the page
    }
  }

  // The server's offset of an upload, or null when it does not know it (any more).
  async headOffset(url) {
    for (let i = 0; ; i++) {
      let res;
      try {
        res = await apiFetch(url, {method: 'HEAD', headers: TUS, cache: 'no-store'});
      } catch (e) {
        if (i >= 3 || this.stopped) throw e;
        await sleep(RETRY_DELAYS[i]);
        continue;
      }
      if (res.status === 200) {
        const length = Number(res.headers.get('Upload-Length'));
        if (res.headers.has('Upload-Length') && length !== this.file.size) return null;
        return Number(res.headers.get('Upload-Offset'));
      }
      if (res.status >= 500 && i < 3) {
        await sleep(RETRY_DELAYS[i]);
        continue;
      }
      return null;
    }
  }

  // One PATCH; resolves with {status, offset, problem} (status 0: the connection failed).
  patch(blob) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      const base = this.offset;
      xhr.open('PATCH', this.url);
      for (const [k, v] of Object.entries(authHeaders({...TUS,
        'Upload-Offset': String(base), 'Content-Type': 'application/offset+octet-stream'})))
        xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => this.onProgress(base + e.loaded, this.file.size);
      xhr.onload = () => {
        let problem = null;
        try {
          problem = xhr.responseText ? JSON.parse(xhr.responseText) : null;
        } catch {
          problem = {detail: xhr.responseText};
        }
        resolve({status: xhr.status, offset: xhr.getResponseHeader('Upload-Offset'), problem});
      };
      xhr.onerror = () => resolve({status: 0, offset: null, problem: null});
      xhr.onabort = () => resolve({status: 0, offset: null, problem: null});
      xhr.send(blob);
    });
  }

  // The completed upload's capture (GET /api/v1/uploads/{id}: "capture", not part of tus).
  async capture() {
    const res = await apiFetch(this.url, {headers: {Accept: 'application/json'}, cache: 'no-store'});
    if (!res.ok) throw new ApiError(res.status, await problemOf(res));
    const state = await res.json();
    if (!state.capture) throw new ApiError(0, {detail: 'the upload completed without a capture'});
    return state.capture;
  }
}

function abortError() {
  const e = new Error('paused');
  e.name = 'AbortError';
  return e;
}

export const hasToken = () => Boolean(token());

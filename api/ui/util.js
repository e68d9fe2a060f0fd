// Small helpers shared by the views: building DOM nodes, formatting numbers and times, the
// status line. No inline styles or HTML strings anywhere (the Content-Security-Policy allows
// neither, and text set with textContent cannot inject markup).

// h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child, ...)
// Attribute values false/null/undefined are left out; true sets an empty attribute.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string' && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replaceChildren(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

const numberFormat = new Intl.NumberFormat();

export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return numberFormat.format(n);
}

// 1234567 → "1.2 MB" (powers of 1000, like the flow filter's suffixes).
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + ' ' + units[i];
}

// Milliseconds → "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min".
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms) || ms < 0) return '–';
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`;
  const hrs = Math.floor(m / 60);
  return `${hrs} h ${String(m % 60).padStart(2, '0')} min`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});

// An ISO 8601 time (UTC) → local date and time; the ISO text stays in the title.
export function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : timeFormat.format(d);
}

export function timeElement(iso) {
  if (!iso) return document.createTextNode('–');
  return h('time', {datetime: iso, title: iso}, fmtTime(iso));
}

// Milliseconds between two ISO times (the second defaults to now).
export function between(fromIso, toIso) {
  if (!fromIso) return null;
  const a = Date.parse(fromIso);
  const b = toIso ? Date.parse(toIso) : Date.now();
  return Number.isNaN(a) || Number.isNaN(b) ? null : Math.max(0, b - a);
}

// Task ids are time-ordered UUIDs (their first digits are the time, the same for tasks made
// together): the last eight digits tell them apart.
export function shortId(id) {
  return id ? id.slice(-8) : '';
}

export function basename(p) {
  if (typeof p !== 'string') return String(p);
  if (p.startsWith('sha256:')) return p.slice(0, 19) + '…';
  return p.slice(p.lastIndexOf('/') + 1) || p;
}

export const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, {once: true});
  });

// The page's status line (an aria-live region): what just happened, for every reader.
export function announce(text, kind = 'info') {
  const el = document.getElementById('status');
  if (!el) return;
  el.textContent = text;
  el.dataset.kind = kind;
}

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export function stateBadge(state) {
  return h('span', {class: `badge state-${state}`}, state);
}

export function progressBar(value, label) {
  const v = Math.max(0, Math.min(1, Number(value) || 0));
  return h('progress', {max: 1, value: v, 'aria-label': label || 'progress',
                        title: Math.round(v * 100) + ' %'});
}

// Counters the browser test reads (how the page learned of changes).
export const stats = (window.__ipfixweb ??= {sseEvents: 0, sseConnects: 0, listLoads: 0,
                                              polls: 0, chartsDrawn: 0});

// Tasks: the list, newest first, kept current without reloading: from server-sent events
// (GET /api/v1/events: state changes and progress of every task) or, where the api has no
// event stream, by polling the list every 2 s. Filter by state, creation time and input;
// cancel (DELETE) and resubmit (POST the stored request again).

import {ApiError, apiJSON, get, withQuery} from './api.js';
import {openEventStream} from './sse.js';
import {TERMINAL, announce, basename, between, fmtDuration, h, progressBar, replaceChildren,
        shortId, stateBadge, stats, timeElement} from './util.js';

const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const PAGE = 50;
const POLL_MS = 2000;

// Resubmits a task's stored request; on 409 (its output is taken) offers to overwrite.
export async function resubmit(t, {overwrite = false, onConflict} = {}) {
  const body = {...t.request};
  if (overwrite) body.overwrite = true;
  try {
    const r = await apiJSON('/api/v1/tasks', {method: 'POST', body});
    const id = r.body.task_id;
    announce(`Resubmitted as task ${shortId(id)} (${r.body.state}).`);
    return id;
  } catch (e) {
    if (e instanceof ApiError && e.status === 409 && !overwrite && onConflict) {
      onConflict(e);
      return null;
    }
    announce(`Resubmit refused: ${describe(e)}`, 'error');
    return null;
  }
}

export async function cancel(id) {
  try {
    const r = await apiJSON(`/api/v1/tasks/${encodeURIComponent(id)}`, {method: 'DELETE'});
    announce(r.status === 202 ? `Task ${shortId(id)} is being cancelled.` : `Task ${shortId(id)} cancelled.`);
    return true;
  } catch (e) {
    announce(`Cancel refused: ${describe(e)}`, 'error');
    return false;
  }
}

export function describe(e) {
  if (!(e instanceof ApiError)) return e.message || String(e);
  const extra = e.errors.map((x) => (x.field ? `${x.field}: ${x.message}` : x.message)).join('; ');
  return extra ? `${e.message} (${extra})` : e.message;
}

export function mount(main) {
  const closers = [];
  const rows = new Map();  // task id → {task, tr, cells}
  let next = null;
  let filter = {};
  let stream = null;
  let pollTimer = null;
  let loading = false;

  const stateSel = h('select', {id: 'f-state', name: 'state'},
    h('option', {value: ''}, 'any state'), STATES.map((s) => h('option', {value: s}, s)));
  const after = h('input', {id: 'f-after', name: 'created_after', type: 'datetime-local', step: 1});
  const before = h('input', {id: 'f-before', name: 'created_before', type: 'datetime-local', step: 1});
  const input = h('input', {id: 'f-input', name: 'input', type: 'search', placeholder: 'part of a path'});
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter tasks'},
    h('div', {class: 'field'}, h('label', {for: 'f-state'}, 'State'), stateSel),
    h('div', {class: 'field'}, h('label', {for: 'f-after'}, 'Created after'), after),
    h('div', {class: 'field'}, h('label', {for: 'f-before'}, 'Created before'), before),
    h('div', {class: 'field'}, h('label', {for: 'f-input'}, 'Input'), input),
    h('div', {class: 'field buttons'},
      h('button', {type: 'submit', class: 'primary'}, 'Apply'),
      h('button', {type: 'reset'}, 'Clear')));
  const live = h('span', {id: 'live-mode', class: 'live', dataset: {mode: 'connecting'}}, 'connecting…');
  const tbody = h('tbody');
  const table = h('table', {class: 'tasks responsive', id: 'task-table'},
    h('caption', {class: 'visually-hidden'}, 'Tasks, newest first'),
    h('thead', {}, h('tr', {},
      ['Task', 'State', 'Progress', 'Inputs', 'Created', 'Duration', 'Attempts', 'Worker', 'Actions']
        .map((c) => h('th', {scope: 'col'}, c)))),
    tbody);
  const empty = h('p', {class: 'muted', hidden: true}, 'No tasks match.');
  const more = h('button', {type: 'button', hidden: true, onclick: () => load(true)}, 'Load more');

  main.append(
    h('div', {class: 'view-head'}, h('h1', {}, 'Tasks'),
      h('p', {class: 'live-line'}, 'Updates: ', live),
      h('a', {class: 'button primary', href: '#/submit'}, 'New task')),
    form,
    h('div', {class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Task list'}, table),
    empty, more);

  const toIso = (v) => (v ? new Date(v).toISOString() : '');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    filter = {state: stateSel.value, created_after: toIso(after.value),
              created_before: toIso(before.value), input: input.value.trim()};
    load(false);
  });
  form.addEventListener('reset', () => {
    setTimeout(() => {
      filter = {};
      load(false);
    });
  });

  function matches(t) {
    if (t.parent_id) return false;  // a split task's part: on its task's page, as in the api's list
    if (filter.state && t.state !== filter.state) return false;
    if (filter.created_after && !(t.created_at > filter.created_after)) return false;
    if (filter.created_before && !(t.created_at < filter.created_before)) return false;
    if (filter.input) {
      const files = (t.request && t.request.pcap_files) || [];
      if (!files.some((f) => String(f).includes(filter.input))) return false;
    }
    return true;
  }

  function duration(t) {
    if (!t.started_at) return '–';
    return fmtDuration(between(t.started_at, t.finished_at));
  }

  function actions(t) {
    const box = h('div', {class: 'actions'});
    if (!TERMINAL.has(t.state)) {
      box.append(h('button', {type: 'button', class: 'danger', dataset: {action: 'cancel'},
        'aria-label': `Cancel task ${shortId(t.task_id)}`,
        onclick: async (e) => {
          e.currentTarget.disabled = true;
          if (await cancel(t.task_id)) refresh(t.task_id);
        }}, 'Cancel'));
    } else {
      const again = h('button', {type: 'button', dataset: {action: 'resubmit'},
        'aria-label': `Resubmit task ${shortId(t.task_id)}`,
        onclick: () => resubmit(t, {onConflict: (err) => {
          replaceChildren(box, h('span', {class: 'conflict'}, err.message, ' '),
            h('button', {type: 'button', class: 'danger', onclick: () => resubmit(t, {overwrite: true})
              .then(() => replaceChildren(box, ...actions(t).childNodes))}, 'Overwrite'),
            h('button', {type: 'button', onclick: () => replaceChildren(box, ...actions(t).childNodes)}, 'Keep'));
        }})}, 'Resubmit');
      box.append(again);
    }
    return box;
  }

  function cellsFor(t) {
    const files = (t.request && t.request.pcap_files) || [];
    return {
      task: h('a', {href: `#/task/${t.task_id}`, class: 'mono', title: t.task_id}, shortId(t.task_id)),
      state: stateBadge(t.state),
      progress: progressBar(t.state === 'succeeded' ? 1 : t.progress, `progress of task ${shortId(t.task_id)}`),
      inputs: h('span', {title: files.join('\n')}, files.slice(0, 3).map(basename).join(', ') +
                                                   (files.length > 3 ? ` +${files.length - 3}` : '')),
      created: timeElement(t.created_at),
      duration: duration(t),
      attempts: String(t.attempts ?? 0),
      worker: t.worker || '–',
      actions: actions(t),
    };
  }

  const LABELS = {task: 'Task', state: 'State', progress: 'Progress', inputs: 'Inputs', created: 'Created',
                  duration: 'Duration', attempts: 'Attempts', worker: 'Worker', actions: 'Actions'};

  function render(t) {
    const c = cellsFor(t);
    let r = rows.get(t.task_id);
    if (!r) {
      const tr = h('tr', {dataset: {taskId: t.task_id, state: t.state}});
      const tds = {};
      for (const k of Object.keys(LABELS)) {
        tds[k] = h(k === 'task' ? 'th' : 'td', {dataset: {label: LABELS[k]}, class: `c-${k}`,
                                                 scope: k === 'task' ? 'row' : null});
        tr.append(tds[k]);
      }
      r = {task: t, tr, tds};
      rows.set(t.task_id, r);
    }
    r.task = t;
    r.tr.dataset.state = t.state;
    for (const [k, v] of Object.entries(c)) replaceChildren(r.tds[k], v);
    return r;
  }

  function place(t, {top = false} = {}) {
    const known = rows.has(t.task_id);
    if (!matches(t)) {
      if (known) {
        rows.get(t.task_id).tr.remove();
        rows.delete(t.task_id);
      }
      updateEmpty();
      return;
    }
    const r = render(t);
    if (!known) {
      if (top) tbody.prepend(r.tr);
      else tbody.append(r.tr);
    }
    updateEmpty();
  }

  function updateEmpty() {
    empty.hidden = rows.size > 0;
  }

  async function load(append) {
    if (loading) return;
    loading = true;
    try {
      const q = {...filter, limit: PAGE};
      if (append && next) q.next = next;
      const body = await get(withQuery('/api/v1/tasks', q));
      stats.listLoads++;
      if (!append) {
        rows.clear();
        replaceChildren(tbody);
      }
      for (const t of body.tasks) place(t);
      next = body.next;
      more.hidden = !next;
      updateEmpty();
    } catch (e) {
      announce(`Could not list tasks: ${describe(e)}`, 'error');
    } finally {
      loading = false;
    }
  }

  // The first page again, merged into the rows (polling mode).
  async function poll() {
    try {
      const limit = Math.min(1000, Math.max(PAGE, rows.size));
      const body = await get(withQuery('/api/v1/tasks', {...filter, limit}));
      stats.polls++;
      const seen = new Set();
      for (const t of [...body.tasks].reverse()) {
        seen.add(t.task_id);
        place(t, {top: !rows.has(t.task_id)});
      }
    } catch (e) {
      announce(`Could not refresh tasks: ${describe(e)}`, 'error');
    }
  }

  // Tasks whose details are fetched again (coalesced: many events, one request per task).
  const stale = new Set();
  let flushTimer = null;
  function refresh(id) {
    stale.add(id);
    flushTimer ??= setTimeout(async () => {
      flushTimer = null;
      const ids = [...stale];
      stale.clear();
      // A burst (hundreds of tasks finishing): one page of the list instead of a request each.
      if (ids.length > 20) {
        await poll();
        return;
      }
      await Promise.all(ids.map(async (tid) => {
        try {
          const t = await get(`/api/v1/tasks/${encodeURIComponent(tid)}`);
          place(t, {top: true});
        } catch (e) {
          if (!(e instanceof ApiError && e.status === 404)) console.warn('task refresh failed', e);
        }
      }));
    }, 150);
  }

  function setMode(mode, text) {
    live.dataset.mode = mode;
    live.textContent = text;
  }

  function startPolling() {
    setMode('polling', `polling every ${POLL_MS / 1000} s`);
    pollTimer = setInterval(poll, POLL_MS);
  }

  function startStream() {
    stream = openEventStream('/api/v1/events', {
      onOpen: () => setMode('events', 'live (server-sent events)'),
      onDrop: () => setMode('connecting', 'reconnecting…'),
      onUnsupported: () => {
        stream = null;
        startPolling();
      },
      onEvent: (type, data) => {
        let d;
        try {
          d = JSON.parse(data);
        } catch {
          return;
        }
        if (!d || !d.task_id) return;
        const r = rows.get(d.task_id);
        if (type === 'state') {
          if (r) {
            r.task = {...r.task, state: d.state, worker: d.worker ?? r.task.worker};
            r.tr.dataset.state = d.state;
            replaceChildren(r.tds.state, stateBadge(d.state));
          }
          refresh(d.task_id);
        } else if (type === 'progress' && r) {
          r.task.progress = d.progress;
          const bar = r.tds.progress.querySelector('progress');
          if (bar) bar.value = Math.max(0, Math.min(1, Number(d.progress) || 0));
        }
      },
    });
  }

  // Durations of running tasks tick.
  const tick = setInterval(() => {
    for (const r of rows.values())
      if (r.task.state === 'running') replaceChildren(r.tds.duration, duration(r.task));
  }, 1000);
  closers.push(() => clearInterval(tick));

  let gone = false;
  load(false).then(() => {
    if (!gone) startStream();
  });

  return () => {
    gone = true;
    stream?.close();
    if (pollTimer) clearInterval(pollTimer);
    if (flushTimer) clearTimeout(flushTimer);
    for (const c of closers) c();
  };
}

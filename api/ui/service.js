// Service: the broker (workers, slots, queue depth, admission), each worker, and the
// throughput computed from successive GET /api/v1/status polls (finished tasks per second).
// Where the api has no /api/v1/status, GET /readyz gives the broker's aggregate (no
// per-worker list, no counters: no throughput).

import {ApiError, apiJSON} from './api.js';
import {sparkline} from './charts.js';
import {announce, fmtNum, h, replaceChildren, stats} from './util.js';
import {describe} from './tasks.js';

const POLL_MS = 2000;
const KEEP = 90;  // polls in the throughput chart (3 minutes)

async function readStatus() {
  try {
    const r = await apiJSON('/api/v1/status');
    return {source: 'status', ...r.body};
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
  }
  // Fallback: /readyz answers 503 with the same body when not ready.
  let body;
  try {
    body = (await apiJSON('/readyz')).body;
  } catch (e) {
    if (!(e instanceof ApiError) || !e.problem || !e.problem.checks) throw e;
    body = e.problem;
  }
  const b = body.checks && typeof body.checks.broker === 'object' ? body.checks.broker : null;
  return {source: 'readyz', broker: b ? {up: true, draining: Boolean(body.checks.draining), ...b} : {up: false},
          workers: null, tasks: null, ready: body.status};
}

export function mount(main) {
  let gone = false;
  let timer = null;
  const history = [];  // {t (s), finished}
  const tput = {xs: [], ys: []};
  let chart = null;
  let chartLoading = false;

  const cards = h('div', {class: 'cards', id: 'service-cards'});
  const admission = h('p', {class: 'admission', id: 'admission', 'aria-live': 'polite'});
  const workersBox = h('div', {id: 'workers'});
  const tasksBox = h('div', {id: 'task-counts'});
  const chartBox = h('div', {class: 'chart', id: 'throughput-chart', role: 'img', 'aria-label': 'throughput over the last minutes'});
  const rate = h('p', {id: 'throughput', class: 'big'}, '–');
  const source = h('p', {class: 'hint', id: 'service-source'});

  main.append(
    h('div', {class: 'view-head'}, h('h1', {}, 'Service')),
    admission, cards,
    h('div', {class: 'chart-grid'},
      h('section', {'aria-labelledby': 'h-tput'}, h('h2', {id: 'h-tput'}, 'Throughput'), rate, chartBox),
      h('section', {'aria-labelledby': 'h-counts'}, h('h2', {id: 'h-counts'}, 'Tasks in the database'), tasksBox)),
    h('section', {'aria-labelledby': 'h-workers'}, h('h2', {id: 'h-workers'}, 'Workers'), workersBox),
    source);

  const card = (label, value, key, sub) => h('div', {class: 'card', dataset: {card: key}},
    h('div', {class: 'card-label'}, label), h('div', {class: 'card-value'}, value),
    sub ? h('div', {class: 'card-sub muted'}, sub) : null);

  function render(s) {
    const b = s.broker || {};
    if (!b.up) {
      admission.dataset.state = 'down';
      admission.textContent = 'The broker does not answer: new tasks are refused (503).';
    } else if (b.draining) {
      admission.dataset.state = 'draining';
      admission.textContent = 'Draining: the broker finishes its tasks and refuses new ones.';
    } else {
      const room = (b.credit ?? 0) + Math.max(0, (b.max_queue ?? 0) - (b.queued ?? 0));
      const open = b.accepting ?? room > 0;  // the broker's own word when it gives it
      admission.dataset.state = open ? 'open' : 'full';
      admission.textContent = open ? `Accepting tasks: room for ${fmtNum(room)} more (free slots plus queue).`
                                       : 'Full: every slot is busy and the queue is full; new tasks get 503 with Retry-After.';
    }
    replaceChildren(cards,
      card('Workers', fmtNum(b.workers), 'workers'),
      card('Slots', fmtNum(b.slots), 'slots', `${fmtNum(b.credit)} free`),
      card('Running', fmtNum(b.running), 'running'),
      card('Queued', fmtNum(b.queued), 'queued', b.max_queue !== undefined ? `of at most ${fmtNum(b.max_queue)}` : null),
      b.succeeded !== undefined ? card('Finished', fmtNum((b.succeeded || 0) + (b.failed || 0) + (b.cancelled || 0)), 'finished',
        `${fmtNum(b.succeeded)} ok, ${fmtNum(b.failed)} failed, ${fmtNum(b.cancelled)} cancelled, ${fmtNum(b.requeued)} requeued`) : null);

    if (Array.isArray(s.workers)) {
      replaceChildren(workersBox, s.workers.length ? h('div', {class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Workers'},
        h('table', {class: 'responsive', id: 'worker-table'},
          h('thead', {}, h('tr', {}, ['Worker', 'Host', 'PID', 'Slots', 'Running', 'Busy'].map((c) => h('th', {scope: 'col'}, c)))),
          h('tbody', {}, s.workers.map((w) => h('tr', {},
            h('th', {scope: 'row', class: 'mono', dataset: {label: 'Worker'}}, w.id),
            h('td', {dataset: {label: 'Host'}}, w.host || '–'),
            h('td', {class: 'num', dataset: {label: 'PID'}}, String(w.pid ?? '–')),
            h('td', {class: 'num', dataset: {label: 'Slots'}}, fmtNum(w.slots)),
            h('td', {class: 'num', dataset: {label: 'Running'}}, fmtNum(w.running)),
            h('td', {dataset: {label: 'Busy'}}, h('meter', {min: 0, max: Math.max(1, w.slots || 0), value: w.running || 0,
              'aria-label': `${w.running} of ${w.slots} slots busy`}))))))) : h('p', {class: 'muted'}, 'No worker is registered.'));
    } else {
      replaceChildren(workersBox, h('p', {class: 'muted'}, 'Per-worker details need GET /api/v1/status (this api has only /readyz).'));
    }

    if (s.tasks && typeof s.tasks === 'object') {
      replaceChildren(tasksBox, h('dl', {class: 'counts'}, Object.entries(s.tasks).map(([k, v]) =>
        h('div', {}, h('dt', {}, h('a', {href: '#/tasks', class: `badge state-${k}`}, k)), h('dd', {}, fmtNum(v))))));
    } else {
      replaceChildren(tasksBox, h('p', {class: 'muted'}, '–'));
    }
    const api = s.api && typeof s.api === 'object'
      ? ` This api: ${fmtNum(s.api.event_streams)} of at most ${fmtNum(s.api.max_event_streams)} event streams open${s.api.draining ? ', draining' : ''}.`
      : '';
    source.textContent = s.source === 'status' ? `From GET /api/v1/status every ${POLL_MS / 1000} s.${api}`
                                               : `From GET /readyz every ${POLL_MS / 1000} s (this api has no /api/v1/status).`;
  }

  async function throughput(s) {
    const b = s.broker || {};
    if (b.succeeded === undefined) {
      rate.textContent = 'n/a (needs GET /api/v1/status)';
      chartBox.hidden = true;
      return;
    }
    chartBox.hidden = false;
    const now = Date.now() / 1000;
    const finished = (b.succeeded || 0) + (b.failed || 0) + (b.cancelled || 0);
    const prev = history[history.length - 1];
    history.push({t: now, finished});
    if (history.length > KEEP + 1) history.shift();
    if (!prev) {
      rate.textContent = 'measuring…';
      return;
    }
    // A broker restart resets its counters: no negative rates.
    const perS = Math.max(0, (finished - prev.finished) / Math.max(0.001, now - prev.t));
    const first = history[0];
    const avg = Math.max(0, (finished - first.finished) / Math.max(0.001, now - first.t));
    rate.textContent = `${perS.toFixed(perS < 10 ? 2 : 0)} tasks/s now, ${avg.toFixed(avg < 10 ? 2 : 0)} tasks/s over ${Math.round(now - first.t)} s`;
    tput.xs.push(now);
    tput.ys.push(perS);
    if (tput.xs.length > KEEP) {
      tput.xs.shift();
      tput.ys.shift();
    }
    if (chart) chart.update(tput.xs, tput.ys);
    else if (!chartLoading && tput.xs.length >= 2) {  // one point has no time span to draw
      chartLoading = true;
      chart = await sparkline(chartBox, {xs: tput.xs, ys: tput.ys, label: 'tasks/s'});
      if (gone) chart.destroy();
    }
  }

  async function tick() {
    try {
      const s = await readStatus();
      if (gone) return;
      stats.polls++;
      render(s);
      await throughput(s);
    } catch (e) {
      if (!gone) announce(`Cannot read the service status: ${describe(e)}`, 'error');
    }
    if (!gone) timer = setTimeout(tick, POLL_MS);
  }
  tick();

  return () => {
    gone = true;
    clearTimeout(timer);
    chart?.destroy();
  };
}

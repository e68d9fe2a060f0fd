// One task: its state followed live, summary cards, the top-N and time-series charts, the flow
// table (filter, sort and paging done by the api), per-flow packet extracts, downloads and the
// event history as a timeline.

import {ApiError, apiJSON, download, downloadsBuffered, get, withQuery} from './api.js';
import {barChart, timeChart} from './charts.js';
import {followTask} from './follow.js';
import {TERMINAL, announce, basename, between, fmtBytes, fmtDuration, fmtNum, h, progressBar,
        replaceChildren, shortId, stateBadge, timeElement} from './util.js';
import {cancel, describe, resubmit} from './tasks.js';

const TOP_BY = [['app', 'application'], ['src', 'source'], ['dst', 'destination'], ['pair', 'pair'],
                ['server_name', 'server name'], ['ja3', 'JA3'], ['port', 'destination port'], ['proto', 'protocol']];
const METRICS = ['bytes', 'packets', 'flows'];
// The flow table's columns: [field, heading, numeric].
const COLUMNS = [['id', 'Flow', true], ['start_ms', 'Start', true], ['proto_name', 'Proto', false],
                 ['src', 'Source', false], ['sport', 'Src port', true], ['dst', 'Destination', false],
                 ['dport', 'Dst port', true], ['app', 'Application', false], ['server_name', 'Server name', false],
                 ['packets', 'Packets', true], ['bytes', 'Bytes', true], ['duration_ms', 'Duration', true]];

function select(id, label, options, value) {
  const s = h('select', {id, name: id}, options.map(([v, t]) => h('option', {value: v, selected: v === value}, t)));
  return h('span', {class: 'inline-field'}, h('label', {for: id}, label), s);
}

function kindOf(t) {
  return (t.request && t.request.kind) || 'convert';
}

export function mount(main, {id}) {
  const base = `/api/v1/tasks/${encodeURIComponent(id)}`;
  const cleanups = [];
  let task = null;
  let resultsShown = false;
  let gone = false;

  // --- the header -------------------------------------------------------------------------------
  const title = h('h1', {}, 'Task ', h('span', {class: 'mono'}, shortId(id)));
  const badge = h('span', {id: 'task-state'});
  const bar = progressBar(0, 'task progress');
  bar.id = 'task-progress';
  const liveMode = h('span', {class: 'live', id: 'task-live', dataset: {mode: 'connecting'}}, 'connecting…');
  const actions = h('div', {class: 'actions'});
  const meta = h('dl', {class: 'meta', id: 'task-meta'});
  const errorBox = h('p', {class: 'error-text', id: 'task-error', hidden: true});
  // A split task's parts: state, progress and worker of each (GET /api/v1/tasks?parent=ID).
  const partList = h('ol', {class: 'plain parts', id: 'task-parts', start: 0, hidden: true});
  const head = h('section', {class: 'task-head', 'aria-labelledby': 'task-title'},
    h('div', {class: 'view-head'}, title, badge, bar, liveMode, actions), meta, partList, errorBox);
  title.id = 'task-title';

  const cards = h('div', {class: 'cards', id: 'summary-cards'});
  const downloads = h('div', {class: 'downloads', id: 'downloads'});
  const results = h('div', {id: 'results', hidden: true});
  const timeline = h('ol', {class: 'timeline', id: 'timeline'});
  const timelineIds = new Set();

  main.append(head,
    h('section', {'aria-labelledby': 'h-summary'}, h('h2', {id: 'h-summary'}, 'Summary'), cards),
    h('section', {'aria-labelledby': 'h-downloads'}, h('h2', {id: 'h-downloads'}, 'Downloads'), downloads),
    results,
    h('section', {'aria-labelledby': 'h-events'}, h('h2', {id: 'h-events'}, 'History'), timeline));

  // --- live state -------------------------------------------------------------------------------
  // The parts are read again at most once a second while their task changes, and once more when
  // it has ended.
  let partsAt = 0;
  let partsTimer = null;
  async function refreshParts() {
    partsTimer = null;
    partsAt = Date.now();
    try {
      const body = await get(withQuery('/api/v1/tasks', {parent: id, limit: 100}));
      const parts = [...body.tasks].sort((a, b) =>
        (a.request?.partition ?? 0) - (b.request?.partition ?? 0));
      replaceChildren(partList, ...parts.map((p) => h('li', {dataset: {state: p.state}},
        h('a', {href: `#/task/${p.task_id}`, class: 'mono'}, shortId(p.task_id)), ' ', stateBadge(p.state),
        p.state === 'running' ? ` ${Math.round((Number(p.progress) || 0) * 100)} %` : '',
        p.worker ? h('span', {class: 'muted'}, ` on ${p.worker}`) : null)));
      partList.hidden = parts.length === 0;
    } catch (e) {
      if (!(e instanceof ApiError)) console.warn('parts refresh failed', e);
    }
  }
  function scheduleParts(t) {
    if (!t.parts || partsTimer) return;
    const wait = TERMINAL.has(t.state) ? 0 : Math.max(0, 1000 - (Date.now() - partsAt));
    partsTimer = setTimeout(refreshParts, wait);
  }
  cleanups.push(() => clearTimeout(partsTimer));

  function showTask(t) {
    task = t;
    scheduleParts(t);
    replaceChildren(badge, stateBadge(t.state));
    bar.value = t.state === 'succeeded' ? 1 : Math.max(0, Math.min(1, Number(t.progress) || 0));
    document.title = `${shortId(id)} ${t.state} · ipfixweb`;
    const files = (t.request && t.request.pcap_files) || [];
    const dur = t.started_at ? fmtDuration(between(t.started_at, t.finished_at)) : '–';
    replaceChildren(meta,
      ...[['Task id', h('span', {class: 'mono'}, t.task_id)],
        ['Kind', kindOf(t)],
        ['Inputs', h('ul', {class: 'plain'}, files.map((f) => h('li', {title: f}, basename(f))))],
        ['Output', h('span', {class: 'mono'}, t.output_path)],
        ['Created', timeElement(t.created_at)],
        ['Started', timeElement(t.started_at)],
        ['Finished', timeElement(t.finished_at)],
        ['Run time', dur],
        ['Attempts', String(t.attempts ?? 0)],
        ['Worker', t.worker || '–'],
        ...(t.parts ? [['Parts', `${t.parts}, on as many workers, then merged`]] : []),
        ...(t.parent_id ? [['Part of', h('a', {href: `#/task/${t.parent_id}`, class: 'mono'}, shortId(t.parent_id))]] : [])].map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
    errorBox.hidden = !t.error;
    errorBox.textContent = t.error ? `Error: ${t.error}` : '';
    replaceChildren(actions);
    if (!TERMINAL.has(t.state)) {
      actions.append(h('button', {type: 'button', class: 'danger', id: 'cancel-task', onclick: async (e) => {
        e.currentTarget.disabled = true;
        await cancel(t.task_id);
      }}, 'Cancel'));
    } else {
      actions.append(h('button', {type: 'button', id: 'resubmit-task', onclick: async () => {
        const nid = await resubmit(t, {onConflict: (err) => {
          replaceChildren(actions, h('span', {class: 'conflict'}, `${err.message} `),
            h('button', {type: 'button', class: 'danger', onclick: async () => {
              const x = await resubmit(t, {overwrite: true});
              if (x) location.hash = `#/task/${x}`;
            }}, 'Overwrite'));
        }});
        if (nid) location.hash = `#/task/${nid}`;
      }}, 'Resubmit'));
    }
    renderCards(t);
    renderDownloads(t);
    // A part of a split task: its outputs were merged into the task's and removed.
    if (t.state === 'succeeded' && !resultsShown && kindOf(t) !== 'extract' && !t.parent_id) {
      resultsShown = true;
      showResults(t);
    }
  }

  function addEvent(e) {
    const key = e.id !== undefined && e.id !== null ? `id:${e.id}` : `${e.at}|${e.state}|${e.reason}`;
    if (timelineIds.has(key)) return;
    timelineIds.add(key);
    timeline.append(h('li', {class: `event state-${e.state}`},
      timeElement(e.at), ' ', stateBadge(e.state),
      e.reason ? h('span', {class: 'reason'}, ` ${e.reason}`) : null,
      e.worker ? h('span', {class: 'muted'}, ` on ${e.worker}`) : null));
  }

  const follower = followTask(id, {
    onTask: showTask,
    onHistory: (events) => {
      replaceChildren(timeline);
      timelineIds.clear();
      for (const e of events) addEvent(e);
    },
    onEvent: addEvent,
    onProgress: (p) => {
      bar.value = Math.max(0, Math.min(1, Number(p) || 0));
    },
    onMode: (m) => {
      liveMode.dataset.mode = m;
      liveMode.textContent = m === 'events' ? 'live' : 'polling';
    },
    onError: (e) => {
      announce(e instanceof ApiError && e.status === 404 ? `No task ${id}.` : `Cannot read task: ${describe(e)}`, 'error');
    },
  });
  follower.done.then(() => {
    // The task has ended (or cannot be read): nothing more to follow.
    if (gone) return;
    liveMode.dataset.mode = 'done';
    liveMode.textContent = '';
  });
  cleanups.push(() => follower.close());

  // --- summary and downloads ----------------------------------------------------------------
  function renderCards(t) {
    const s = t.summary || {};
    const card = (label, value, sub, key) => h('div', {class: 'card', dataset: {card: key}},
      h('div', {class: 'card-label'}, label), h('div', {class: 'card-value'}, value), sub ? h('div', {class: 'card-sub muted'}, sub) : null);
    if (!t.summary) {
      replaceChildren(cards, h('p', {class: 'muted'}, t.state === 'succeeded' ? 'No summary.' : 'The summary comes when the task has finished.'));
      return;
    }
    const apps = (s.top_applications_by_bytes || []).slice(0, 3).map((a) => a.application ?? a.name ?? a.key).filter(Boolean);
    replaceChildren(cards,
      card('Packets', fmtNum(s.packets), null, 'packets'),
      card('Bytes', fmtBytes(s.bytes), fmtNum(s.bytes) + ' B', 'bytes'),
      card('Flows', fmtNum(s.flows), s.biflow === false ? 'uniflow records' : 'biflow records', 'flows'),
      card('Capture span', fmtDuration((s.duration_s ?? 0) * 1000),
        s.first_packet ? `from ${new Date(s.first_packet).toLocaleString()}` : null, 'duration'),
      card('Applications', s.applications_distinct !== undefined ? fmtNum(s.applications_distinct) : '–',
        apps.length ? apps.join(', ') : null, 'applications'),
      card('Conversion', fmtDuration((s.elapsed_s ?? 0) * 1000),
        s.packets_per_s ? `${fmtNum(Math.round(s.packets_per_s))} packets/s` : null, 'elapsed'));
  }

  function link(label, url, filename, dl) {
    const a = h('a', {href: url, class: 'button', download: filename || true, dataset: {download: dl}}, label);
    a.addEventListener('click', async (e) => {
      if (!downloadsBuffered()) return;  // the plain link downloads it
      e.preventDefault();
      try {
        announce(`Downloading ${label}…`);
        await download(url, filename);
        announce(`Downloaded ${label}.`);
      } catch (err) {
        announce(`Download failed: ${describe(err)}`, 'error');
      }
    });
    return a;
  }

  let flowQuery = {filter: '', sort: ''};
  function renderDownloads(t) {
    if (t.state !== 'succeeded') {
      replaceChildren(downloads, h('p', {class: 'muted'}, 'Downloads appear when the task has succeeded.'));
      return;
    }
    if (t.parent_id) {
      replaceChildren(downloads, h('p', {class: 'muted'}, 'A part of a split task: its records are in ',
        h('a', {href: `#/task/${t.parent_id}`}, 'that task'), '.'));
      return;
    }
    const out = basename(t.output_path);
    if (kindOf(t) === 'extract') {
      replaceChildren(downloads, link('Packets (pcap)', `${base}/output`, out, 'pcap'));
      return;
    }
    const q = {filter: flowQuery.filter, sort: flowQuery.sort};
    const flowStore = !(t.request && t.request.flow_store === false);
    replaceChildren(downloads,
      link('IPFIX', `${base}/output`, out, 'ipfix'),
      flowStore ? [
        link('NDJSON', withQuery(`${base}/flows.ndjson`, q), `${out}.ndjson`, 'ndjson'),
        link('CSV', withQuery(`${base}/flows.csv`, q), `${out}.csv`, 'csv'),
        link('Flow store (SQLite)', `${base}/flows.sqlite`, `${out}.flows.sqlite`, 'sqlite'),
      ] : null,
      h('p', {class: 'hint'}, flowStore && (q.filter || q.sort) ? 'NDJSON and CSV hold the flows of the table\'s filter and order. ' : '',
        downloadsBuffered() ? 'With a token, a download is fetched whole into memory first (as large as the file), then saved.' : ''));
  }

  // --- results: charts and the flow table ----------------------------------------------------
  function showResults(t) {
    if (t.request && t.request.flow_store === false) {
      results.hidden = false;
      replaceChildren(results, h('p', {class: 'muted'}, 'This task was run without a flow store ("flow_store": false): no flow table or charts.'));
      return;
    }
    results.hidden = false;
    const filterInput = h('input', {id: 'flow-filter', type: 'search', name: 'filter', spellcheck: false,
      placeholder: 'app ~ "TLS" and bytes > 1M', 'aria-describedby': 'flow-filter-help flow-filter-error'});
    const filterError = h('div', {id: 'flow-filter-error', class: 'field-error', hidden: true, role: 'alert'});
    const filterForm = h('form', {class: 'flow-filter', role: 'search', 'aria-label': 'Filter flows'},
      h('label', {for: 'flow-filter'}, 'Filter'),
      filterInput,
      h('button', {type: 'submit', class: 'primary'}, 'Apply'),
      h('button', {type: 'button', onclick: () => { filterInput.value = ''; apply(); }}, 'Clear'),
      h('p', {class: 'hint', id: 'flow-filter-help'}, 'Applies to the charts, the table and the NDJSON/CSV downloads. Examples: ',
        h('code', {}, 'proto tcp'), ', ', h('code', {}, 'app ~ "DNS"'), ', ', h('code', {}, 'port 443 and bytes > 10k'),
        ' (docs/flow-filter.md).'),
      filterError);

    // charts
    const topBox = h('div', {class: 'chart', id: 'top-chart', role: 'img', 'aria-label': 'top groups chart'});
    const topTable = h('div', {class: 'table-wrap', id: 'top-table'});
    const topForm = h('form', {class: 'chart-controls'},
      select('top-by', 'By', TOP_BY, 'app'), select('top-metric', 'Metric', METRICS.map((m) => [m, m]), 'bytes'),
      select('top-n', 'Show', [['5', 'top 5'], ['10', 'top 10'], ['20', 'top 20']], '10'));
    const tsBox = h('div', {class: 'chart', id: 'ts-chart', role: 'img', 'aria-label': 'time series chart'});
    const tsForm = h('form', {class: 'chart-controls'},
      select('ts-by', 'By', [['app', 'application'], ['proto', 'protocol']], 'app'),
      select('ts-metric', 'Metric', METRICS.map((m) => [m, m]), 'bytes'));
    const charts = {top: null, ts: null};
    cleanups.push(() => { charts.top?.destroy(); charts.ts?.destroy(); });

    // table
    const thead = h('thead');
    const tbody = h('tbody');
    const table = h('table', {class: 'flows', id: 'flow-table'}, h('caption', {class: 'visually-hidden'}, 'Flow records'), thead, tbody);
    const pageInfo = h('span', {class: 'muted', id: 'flow-page-info', 'aria-live': 'polite'});
    const prev = h('button', {type: 'button', id: 'flow-prev', disabled: true}, 'Previous');
    const next = h('button', {type: 'button', id: 'flow-next', disabled: true}, 'Next');
    const limitSel = select('flow-limit', 'Rows', [['25', '25'], ['50', '50'], ['100', '100']], '25');
    const pager = h('div', {class: 'pager'}, prev, next, limitSel, pageInfo);

    replaceChildren(results,
      h('section', {'aria-labelledby': 'h-flows-filter'}, h('h2', {id: 'h-flows-filter', class: 'visually-hidden'}, 'Filter'), filterForm),
      h('div', {class: 'chart-grid'},
        h('section', {'aria-labelledby': 'h-top'}, h('h2', {id: 'h-top'}, 'Top groups'), topForm, topBox, topTable),
        h('section', {'aria-labelledby': 'h-ts'}, h('h2', {id: 'h-ts'}, 'Over time'), tsForm, tsBox)),
      h('section', {'aria-labelledby': 'h-flows'}, h('h2', {id: 'h-flows'}, 'Flows'),
        h('div', {class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Flow records'}, table), pager));

    const sort = {col: '', desc: false};
    let cursors = [null];  // the cursor of each page seen (null: the first)
    let pageIndex = 0;
    let nextCursor = null;

    function renderHead() {
      replaceChildren(thead, h('tr', {}, COLUMNS.map(([f, label, numeric]) => {
        const active = sort.col === f;
        const btn = h('button', {type: 'button', class: 'sort', dataset: {sort: f},
          'aria-label': `Sort by ${label}${active ? (sort.desc ? ', now descending' : ', now ascending') : ''}`,
          onclick: () => {
            if (sort.col === f) sort.desc = !sort.desc;
            else { sort.col = f; sort.desc = numeric; }
            restart();
          }}, label, h('span', {class: 'arrow', 'aria-hidden': 'true'}, active ? (sort.desc ? ' ▼' : ' ▲') : ''));
        return h('th', {scope: 'col', class: numeric && f !== 'start_ms' ? 'num' : '', 'aria-sort': active ? (sort.desc ? 'descending' : 'ascending') : null}, btn);
      }), h('th', {scope: 'col'}, 'Packets')));
    }

    function sortParam() {
      return sort.col ? (sort.desc ? '-' : '') + sort.col : '';
    }

    function showFilterError(err) {
      const e = (err.errors || []).find((x) => x.field === 'filter') || err.errors?.[0];
      filterError.hidden = false;
      filterInput.setAttribute('aria-invalid', 'true');
      const text = filterInput.value;
      const children = [h('span', {class: 'error-line'}, e ? e.message : err.message)];
      if (e && Number.isInteger(e.position) && e.field === 'filter') {
        const p = Math.min(e.position, text.length);
        children.push(h('code', {class: 'caret-line'}, text.slice(0, p), h('mark', {}, text.slice(p, p + 1) || ' '), text.slice(p + 1)));
      }
      replaceChildren(filterError, ...children);
    }

    function clearFilterError() {
      filterError.hidden = true;
      filterInput.removeAttribute('aria-invalid');
      replaceChildren(filterError);
    }

    async function loadPage() {
      const q = {limit: limitSel.querySelector('select').value, filter: flowQuery.filter, sort: sortParam(),
                 fields: COLUMNS.map((c) => c[0]).join(','), next: cursors[pageIndex]};
      tbody.setAttribute('aria-busy', 'true');
      try {
        const body = await get(withQuery(`${base}/flows`, q));
        if (gone) return;
        clearFilterError();
        replaceChildren(tbody, body.flows.map(flowRow));
        if (!body.flows.length)
          tbody.append(h('tr', {}, h('td', {colspan: COLUMNS.length + 1, class: 'muted'}, 'No flows match.')));
        nextCursor = body.next;
        next.disabled = !nextCursor;
        prev.disabled = pageIndex === 0;
        const first = pageIndex * Number(q.limit) + 1;
        pageInfo.textContent = body.flows.length
          ? `flows ${first}–${first + body.flows.length - 1}${nextCursor ? '' : ' (last page)'}` : '';
      } catch (err) {
        if (err instanceof ApiError && err.status === 422) showFilterError(err);
        else announce(`Cannot read flows: ${describe(err)}`, 'error');
      } finally {
        tbody.removeAttribute('aria-busy');
      }
    }

    function flowRow(f) {
      const cells = COLUMNS.map(([k, , numeric]) => {
        let v = f[k];
        if (k === 'start_ms') v = v === null || v === undefined ? '–' : new Date(v).toISOString().replace('T', ' ').slice(0, 23);
        else if (k === 'duration_ms') v = fmtDuration(v);
        else if (k === 'bytes') v = fmtNum(v);
        else if (k === 'packets') v = fmtNum(v);
        else if (v === null || v === undefined) v = '–';
        return h(k === 'id' ? 'th' : 'td', {class: numeric && k !== 'start_ms' ? 'num' : '', dataset: {col: k}, scope: k === 'id' ? 'row' : null}, String(v));
      });
      const pcapCell = h('td', {class: 'pcap-cell'});
      pcapCell.append(h('button', {type: 'button', class: 'small', dataset: {flow: f.id},
        'aria-label': `Packets of flow ${f.id} as pcap`, onclick: () => extract(f.id, pcapCell)}, 'Packets'));
      return h('tr', {dataset: {flow: f.id}}, cells, pcapCell);
    }

    // POST .../flows/{flow}/pcap queues an extract task; followed until it ends, then its output
    // (the pcap) is downloaded.
    async function extract(flow, cell) {
      const status = h('span', {class: 'muted', 'aria-live': 'polite'}, 'queued…');
      replaceChildren(cell, status);
      let xid;
      try {
        const r = await apiJSON(`${base}/flows/${flow}/pcap`, {method: 'POST'});
        xid = r.body.task_id;
      } catch (err) {
        replaceChildren(cell, h('span', {class: 'error-text'}, describe(err)));
        return;
      }
      const name = `flow-${flow}.pcap`;
      const f = followTask(xid, {
        onTask: (x) => {
          status.textContent = x.state === 'running' ? `running ${Math.round((x.progress || 0) * 100)} %` : x.state;
          if (x.state === 'succeeded') {
            const a = link('pcap', `/api/v1/tasks/${xid}/output`, name, 'flow-pcap');
            a.classList.add('small');
            replaceChildren(cell, a, ' ', h('a', {href: `#/task/${xid}`, class: 'muted'}, 'task'));
            download(`/api/v1/tasks/${xid}/output`, name)
              .then(() => announce(`Packets of flow ${flow} downloaded (${name}).`))
              .catch((err) => announce(`Download failed: ${describe(err)}`, 'error'));
          } else if (TERMINAL.has(x.state)) {
            replaceChildren(cell, h('span', {class: 'error-text'}, `${x.state}${x.error ? ': ' + x.error : ''}`));
          }
        },
        onProgress: (p) => { status.textContent = `running ${Math.round(p * 100)} %`; },
      });
      cleanups.push(() => f.close());
    }

    async function drawTop() {
      const by = topForm.querySelector('#top-by').value;
      const metric = topForm.querySelector('#top-metric').value;
      const n = topForm.querySelector('#top-n').value;
      try {
        const body = await get(withQuery(`${base}/top`, {by, metric, n, filter: flowQuery.filter}));
        if (gone) return;
        const label = (g) => {
          if (by === 'pair') return `${g.src ?? '?'} ↔ ${g.dst ?? '?'}`;
          const v = g[{ja3: 'ja3c', port: 'dport', proto: 'proto_name'}[by] || by];
          return v === null || v === undefined || v === '' ? '(none)' : String(v);
        };
        const groups = body.groups || [];
        charts.top?.destroy();
        charts.top = null;
        replaceChildren(topTable, h('table', {class: 'compact'},
          h('caption', {class: 'visually-hidden'}, `Top ${by} by ${metric}`),
          h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, TOP_BY.find((x) => x[0] === by)[1]),
            METRICS.map((m) => h('th', {scope: 'col', class: 'num'}, m)))),
          h('tbody', {}, groups.map((g) => h('tr', {}, h('th', {scope: 'row'}, label(g)),
            METRICS.map((m) => h('td', {class: 'num'}, m === 'bytes' ? fmtBytes(g[m]) : fmtNum(g[m]))))))));
        if (!groups.length) {
          replaceChildren(topBox, h('p', {class: 'muted'}, 'No flows match.'));
          return;
        }
        charts.top = await barChart(topBox, {labels: groups.map(label), values: groups.map((g) => g[metric]), metric,
                                             title: `top ${by} by ${metric}`});
        if (gone) charts.top.destroy();
      } catch (err) {
        if (err instanceof ApiError && err.status === 422) showFilterError(err);
        else replaceChildren(topBox, h('p', {class: 'error-text'}, `Cannot read the top groups: ${describe(err)}`));
      }
    }

    async function drawSeries() {
      const by = tsForm.querySelector('#ts-by').value;
      const metric = tsForm.querySelector('#ts-metric').value;
      try {
        const body = await get(withQuery(`${base}/timeseries`, {by, metric, filter: flowQuery.filter}));
        if (gone) return;
        charts.ts?.destroy();
        charts.ts = null;
        if (!body.time || !body.time.length) {
          replaceChildren(tsBox, h('p', {class: 'muted'}, 'No data in this range.'));
          return;
        }
        charts.ts = await timeChart(tsBox, {time: body.time, series: body.series || [], metric,
                                            title: `${metric} per ${by === 'app' ? 'application' : 'protocol'} (bucket ${fmtDuration(body.bucket_ms)})`});
        if (gone) charts.ts.destroy();
      } catch (err) {
        if (err instanceof ApiError && err.status === 422) showFilterError(err);
        else replaceChildren(tsBox, h('p', {class: 'error-text'}, `Cannot read the time series: ${describe(err)}`));
      }
    }

    function restart() {
      flowQuery = {...flowQuery, sort: sortParam()};  // the exports follow the table's order
      cursors = [null];
      pageIndex = 0;
      renderHead();
      renderDownloads(task);
      loadPage();
    }

    function apply() {
      flowQuery = {...flowQuery, filter: filterInput.value.trim()};
      clearFilterError();
      restart();
      drawTop();
      drawSeries();
    }

    filterForm.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
    topForm.addEventListener('change', drawTop);
    tsForm.addEventListener('change', drawSeries);
    for (const f of [topForm, tsForm]) f.addEventListener('submit', (e) => e.preventDefault());
    limitSel.querySelector('select').addEventListener('change', restart);
    next.addEventListener('click', () => {
      if (!nextCursor) return;
      cursors[pageIndex + 1] = nextCursor;
      pageIndex++;
      loadPage();
    });
    prev.addEventListener('click', () => {
      if (pageIndex === 0) return;
      pageIndex--;
      loadPage();
    });

    renderHead();
    loadPage();
    drawTop();
    drawSeries();
  }

  return () => {
    gone = true;
    for (const c of cleanups) c();
  };
}

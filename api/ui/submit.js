// Submit: captures in (drag and drop or a file picker: resumable tus uploads with a progress
// bar; captures uploaded before; paths on the server), the task's options, and the api's 422
// `errors` ({field, message}) shown under the fields they name.

import {ApiError, apiJSON, get} from './api.js';
import {TusUpload} from './tus.js';
import {announce, basename, fmtBytes, h, replaceChildren, shortId, timeElement} from './util.js';
import {describe} from './tasks.js';

// An Idempotency-Key (crypto.randomUUID needs a secure context; getRandomValues does not).
function newKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return 'ui-' + [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

const ANALYSES = ['tcp', 'udp', 'icmp', 'dns', 'tls', 'http', 'quic', 'other'];

// The form's fields: request key → the element that shows its errors.
function field(id, label, control, hint) {
  const err = h('p', {class: 'field-error', id: `err-${id}`, hidden: true});
  const hintEl = hint ? h('p', {class: 'hint', id: `hint-${id}`}, hint) : null;
  control.setAttribute('aria-describedby', [hintEl ? `hint-${id}` : '', `err-${id}`].filter(Boolean).join(' '));
  return {box: h('div', {class: 'field', dataset: {field: id}}, h('label', {for: control.id}, label), control, hintEl, err),
          control, err};
}

function check(id, label, checked, hint) {
  const control = h('input', {type: 'checkbox', id, name: id, checked});
  const err = h('p', {class: 'field-error', id: `err-${id}`, hidden: true});
  control.setAttribute('aria-describedby', `err-${id}`);
  return {box: h('div', {class: 'field check', dataset: {field: id}},
                 control, h('label', {for: id}, label), hint ? h('span', {class: 'hint'}, hint) : null, err),
          control, err};
}

export function mount(main) {
  let stopped = false;
  const uploads = [];  // {upload, ref, name, row}
  let idempotencyKey = newKey();

  // --- captures -----------------------------------------------------------------------------
  const fileInput = h('input', {type: 'file', id: 'file-input', multiple: true, class: 'visually-hidden',
                                accept: '.pcap,.pcapng,.cap,.gz,.zst,.xz,.bz2,.ipfix'});
  const drop = h('div', {class: 'dropzone', id: 'dropzone'},
    h('p', {}, 'Drop capture files here (pcap, pcapng, IPFIX; plain or gzip, zstd, xz, bzip2) or '),
    fileInput,
    h('label', {for: 'file-input', class: 'button'}, 'Choose files…'),
    h('p', {class: 'hint'}, 'Uploads are resumable: after a broken connection or a reload, pick the same file again and it goes on where it stopped.'));
  const uploadList = h('ul', {class: 'uploads', id: 'upload-list', 'aria-label': 'Uploads'});

  const captureList = h('div', {class: 'captures', id: 'capture-list'}, h('p', {class: 'muted'}, 'Loading uploaded captures…'));
  const paths = h('textarea', {id: 'paths', name: 'paths', rows: 3, spellcheck: false,
                               placeholder: 'day1/a.pcap\nday1/b.pcapng'});
  const pathsField = field('paths', 'Paths on the server (one per line, relative to an input root)', paths);
  const inputsErr = h('div', {class: 'field-error', id: 'err-pcap_files', hidden: true, role: 'alert'});

  // --- options ------------------------------------------------------------------------------
  const output = field('output_path', 'Output file (relative to the output root)',
    h('input', {id: 'output_path', name: 'output_path', type: 'text', required: true, spellcheck: false,
                placeholder: 'capture.ipfix'}));
  let outputEdited = false;
  output.control.addEventListener('input', () => { outputEdited = true; });
  const kind = field('kind', 'Kind', h('select', {id: 'kind', name: 'kind'},
    h('option', {value: 'convert'}, 'convert: meter captures into flows'),
    h('option', {value: 'ingest'}, 'ingest: carry over IPFIX files')));
  const dpi = check('DPI', 'Label flows with nDPI (DPI)', true);
  const uniflow = check('uniflow', 'Uniflow: one record per direction', false);
  const flowStore = check('flow_store', 'Write the flow store (needed for the flow table and charts)', true);
  const overwrite = check('overwrite', 'Overwrite the output of an earlier succeeded task', false);
  const analyses = h('fieldset', {class: 'field analyses', id: 'analysis_list', dataset: {field: 'analysis_list'}},
    h('legend', {}, 'Analyses in the summary'),
    ANALYSES.map((a) => h('span', {class: 'check'},
      h('input', {type: 'checkbox', id: `an-${a}`, name: 'analysis_list', value: a, checked: a === 'tcp' || a === 'udp'}),
      h('label', {for: `an-${a}`}, a))),
    h('p', {class: 'field-error', id: 'err-analysis_list', hidden: true}));
  const num = (id, label, hint, attrs = {}) =>
    field(id, label, h('input', {id, name: id, type: 'number', inputmode: 'decimal', ...attrs}), hint);
  const idle = num('idle_timeout', 'Idle timeout (s)', 'default 300; packet time', {min: 0, step: 'any', placeholder: '300'});
  const active = num('active_timeout', 'Active timeout (s)', 'default 1800', {min: 0, step: 'any', placeholder: '1800'});
  const priority = num('priority', 'Priority', '-100..100, higher runs first', {min: -100, max: 100, step: 1, placeholder: '0'});
  const maxFlows = num('max_flows', 'Flows in memory', 'default 1048576', {min: 1, step: 1, placeholder: '1048576'});
  const parallelism = num('parallelism', 'Split across workers', '1..64 parts, merged into one output',
    {min: 1, max: 64, step: 1, placeholder: '1'});
  const bpf = field('filter', 'BPF filter (packets)',
    h('input', {id: 'filter', name: 'filter', type: 'text', spellcheck: false, placeholder: 'not port 22'}),
    'libpcap syntax, applied before metering; checked at submission');

  const general = h('div', {class: 'field-error', id: 'err-general', hidden: true, role: 'alert'});
  const submitBtn = h('button', {type: 'submit', class: 'primary', id: 'submit-task'}, 'Submit task');
  const form = h('form', {id: 'submit-form', novalidate: true},
    h('section', {'aria-labelledby': 'h-captures'},
      h('h2', {id: 'h-captures'}, 'Captures'),
      drop, uploadList,
      h('h3', {}, 'Uploaded before'), captureList,
      pathsField.box, inputsErr),
    h('section', {'aria-labelledby': 'h-options'},
      h('h2', {id: 'h-options'}, 'Options'),
      h('div', {class: 'grid'}, output.box, kind.box),
      h('div', {class: 'checks'}, dpi.box, uniflow.box, flowStore.box, overwrite.box),
      analyses,
      h('div', {class: 'grid'}, idle.box, active.box, priority.box, maxFlows.box, parallelism.box),
      bpf.box),
    general,
    h('div', {class: 'buttons'}, submitBtn));

  main.append(h('div', {class: 'view-head'}, h('h1', {}, 'Submit a task')), form);

  const errorBoxes = {
    output_path: output.err, kind: kind.err, DPI: dpi.err, uniflow: uniflow.err, flow_store: flowStore.err,
    overwrite: overwrite.err, analysis_list: analyses.querySelector('#err-analysis_list'),
    idle_timeout: idle.err, active_timeout: active.err, priority: priority.err, max_flows: maxFlows.err,
    parallelism: parallelism.err, filter: bpf.err,
  };
  const controls = {output_path: output.control, kind: kind.control, DPI: dpi.control, uniflow: uniflow.control,
    flow_store: flowStore.control, overwrite: overwrite.control, idle_timeout: idle.control,
    active_timeout: active.control, priority: priority.control, max_flows: maxFlows.control,
    parallelism: parallelism.control, filter: bpf.control};

  // --- uploads ------------------------------------------------------------------------------
  function startUpload(file) {
    const bar = h('progress', {max: 1, value: 0, 'aria-label': `upload of ${file.name}`});
    const status = h('span', {class: 'upload-status', 'aria-live': 'polite'}, 'starting…');
    const pct = h('span', {class: 'pct'}, '0 %');
    const btn = h('button', {type: 'button', class: 'small'}, 'Pause');
    const use = h('input', {type: 'checkbox', disabled: true, 'aria-label': `use ${file.name} in the task`});
    const row = h('li', {class: 'upload', dataset: {name: file.name, state: 'uploading'}},
      h('span', {class: 'name'}, file.name, ' ', h('span', {class: 'muted'}, fmtBytes(file.size))),
      bar, pct, status, btn, h('label', {class: 'check'}, use, ' use'));
    uploadList.append(row);
    const entry = {name: file.name, ref: null, use, row};
    uploads.push(entry);
    const up = new TusUpload(file, {
      onProgress: (sent, total) => {
        bar.value = total ? sent / total : 1;
        pct.textContent = `${Math.floor((total ? sent / total : 1) * 100)} %`;
      },
      onStatus: (text) => { status.textContent = text; },
    });
    entry.upload = up;
    let running = false;
    const run = async () => {
      running = true;
      row.dataset.state = 'uploading';
      btn.textContent = 'Pause';
      status.textContent = up.offset ? 'resuming…' : 'uploading…';
      try {
        const cap = await up.start();
        entry.ref = cap.ref;
        row.dataset.state = 'done';
        row.dataset.ref = cap.ref;
        if (up.resumedFrom) row.dataset.resumedFrom = String(up.resumedFrom);
        row.dataset.recoveries = String(up.recoveries);
        status.textContent = `uploaded: ${cap.ref.slice(0, 19)}…${cap.existing ? ' (already there)' : ''}`;
        use.disabled = false;
        use.checked = true;
        btn.remove();
        suggestOutput(file.name);
        announce(`Uploaded ${file.name}.`);
        loadCaptures();
      } catch (e) {
        if (e.name === 'AbortError') {
          row.dataset.state = 'paused';
          status.textContent = `paused at ${fmtBytes(up.offset)}`;
          btn.textContent = 'Resume';
        } else {
          row.dataset.state = 'failed';
          status.textContent = `failed: ${describe(e)}`;
          btn.textContent = 'Retry';
          announce(`Upload of ${file.name} failed: ${describe(e)}`, 'error');
        }
      } finally {
        running = false;
      }
    };
    btn.addEventListener('click', () => {
      if (running) up.pause();
      else run();
    });
    run();
  }

  fileInput.addEventListener('change', () => {
    for (const f of fileInput.files) startUpload(f);
    fileInput.value = '';
  });
  for (const ev of ['dragenter', 'dragover']) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
  }
  for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    for (const f of e.dataTransfer?.files || []) startUpload(f);
  });

  // --- captures uploaded before ---------------------------------------------------------------
  async function loadCaptures() {
    try {
      const body = await get('/api/v1/captures?limit=100');
      if (stopped) return;
      const chosen = new Set([...captureList.querySelectorAll('input:checked')].map((i) => i.value));
      if (!body.captures.length) {
        replaceChildren(captureList, h('p', {class: 'muted'}, 'None yet.'));
        return;
      }
      replaceChildren(captureList, h('ul', {class: 'capture-options'}, body.captures.map((c, i) =>
        h('li', {}, h('input', {type: 'checkbox', id: `cap-${i}`, name: 'capture', value: c.ref, checked: chosen.has(c.ref)}),
          h('label', {for: `cap-${i}`}, h('span', {class: 'name'}, c.name), ' ',
            h('span', {class: 'muted'}, `${fmtBytes(c.size)}, ${c.format}, `), timeElement(c.uploaded_at))))));
      for (const box of captureList.querySelectorAll('input')) {
        box.addEventListener('change', () => {
          if (box.checked) suggestOutput(box.parentElement.querySelector('.name').textContent);
        });
      }
    } catch (e) {
      replaceChildren(captureList, h('p', {class: 'muted'}, `Cannot list uploaded captures: ${describe(e)}`));
    }
  }

  function suggestOutput(name) {
    if (outputEdited || output.control.value) return;
    const stem = basename(name).replace(/\.(gz|zst|xz|bz2)$/i, '').replace(/\.(pcapng|pcap|cap|ipfix)$/i, '');
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
    output.control.value = `${stem || 'capture'}-${stamp}.ipfix`;
  }

  // --- the request ----------------------------------------------------------------------------
  function inputs() {
    const list = [];
    for (const u of uploads) if (u.ref && u.use.checked) list.push({value: u.ref, label: u.name});
    for (const c of captureList.querySelectorAll('input:checked'))
      if (!list.some((x) => x.value === c.value))
        list.push({value: c.value, label: c.parentElement.querySelector('.name').textContent});
    for (const line of paths.value.split('\n').map((l) => l.trim()).filter(Boolean)) list.push({value: line, label: line});
    return list;
  }

  function request(list) {
    const body = {pcap_files: list.map((x) => x.value), output_path: output.control.value.trim()};
    if (kind.control.value !== 'convert') body.kind = kind.control.value;
    body.DPI = dpi.control.checked;
    body.analysis_list = [...analyses.querySelectorAll('input:checked')].map((i) => i.value);
    for (const [k, f] of [['idle_timeout', idle], ['active_timeout', active], ['priority', priority],
      ['max_flows', maxFlows], ['parallelism', parallelism]]) {
      const v = f.control.value.trim();
      // Sent as typed (a number when it is one): the api's 422 says what is wrong with it.
      if (v !== '') body[k] = Number.isFinite(Number(v)) ? Number(v) : v;
    }
    if (bpf.control.value.trim()) body.filter = bpf.control.value.trim();
    if (uniflow.control.checked) body.uniflow = true;
    if (!flowStore.control.checked) body.flow_store = false;
    if (overwrite.control.checked) body.overwrite = true;
    return body;
  }

  function clearErrors() {
    for (const el of form.querySelectorAll('.field-error')) {
      el.hidden = true;
      el.replaceChildren();
    }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  function showError(box, text, control) {
    box.hidden = false;
    box.append(h('span', {class: 'error-line'}, text));
    control?.setAttribute('aria-invalid', 'true');
  }

  function showErrors(err, list) {
    let first = null;
    const problems = err.errors.length ? err.errors : [{field: '', message: err.message}];
    for (const e of problems) {
      const f = String(e.field || '');
      const key = f.replace(/\[.*$/, '');
      if (key === 'pcap_files') {
        const m = /\[(\d+)\]/.exec(f);
        const which = m && list[Number(m[1])] ? `${list[Number(m[1])].label}: ` : '';
        showError(inputsErr, which + e.message, null);
        first ??= inputsErr;
      } else if (errorBoxes[key]) {
        showError(errorBoxes[key], e.message, controls[key]);
        first ??= controls[key] || errorBoxes[key];
      } else {
        showError(general, f ? `${f}: ${e.message}` : e.message, null);
        first ??= general;
      }
    }
    if (err.errors.length && err.message) {
      general.hidden = false;
      general.prepend(h('strong', {class: 'error-line'}, err.message));
    }
    first?.focus?.();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors();
    const list = inputs();
    if (uploads.some((u) => !u.ref && u.row.dataset.state === 'uploading')) {
      showError(general, 'An upload is still running: wait for it or pause it.', null);
      return;
    }
    if (!list.length) {
      showError(inputsErr, 'Choose at least one capture: upload one, tick an uploaded one or type a path.', null);
      inputsErr.focus?.();
      return;
    }
    submitBtn.disabled = true;
    try {
      const r = await apiJSON('/api/v1/tasks', {method: 'POST', body: request(list),
                                                headers: {'Idempotency-Key': idempotencyKey}});
      idempotencyKey = newKey();
      const id = r.body.task_id;
      announce(`Task ${shortId(id)} ${r.body.existing ? 'exists already' : 'submitted'} (${r.body.state}).`);
      location.hash = `#/task/${id}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422) {
        idempotencyKey = newKey();  // the body will change
        showErrors(err, list);
        announce('The api refused the task; see the messages under the fields.', 'error');
      } else if (err instanceof ApiError) {
        const retry = err.status === 503 ? ' Try again in a moment (the same request is not submitted twice).' : '';
        showError(general, `${err.message}${retry}`, null);
        announce(`Submission refused: ${err.message}`, 'error');
      } else {
        showError(general, `The request failed: ${err.message}`, null);
      }
    } finally {
      submitBtn.disabled = false;
    }
  });

  inputsErr.tabIndex = -1;
  general.tabIndex = -1;
  loadCaptures();
  return () => {
    stopped = true;
    for (const u of uploads) u.upload?.pause();
  };
}

export {ApiError};

// The page's entry: hash routing between the views (#/tasks, #/submit, #/task/ID, #/service).
// Each view module exports mount(main, params) and returns a function that unmounts it (closes
// its event streams, timers and charts).

import {forgetToken, token} from './api.js';
import {announce} from './util.js';
import * as tasks from './tasks.js';
import * as submit from './submit.js';
import * as task from './task.js';
import * as service from './service.js';

const main = document.getElementById('main');
let unmount = null;
let seq = 0;

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [name, ...rest] = hash.split('/');
  if (name === 'task' && rest[0]) return {view: task, name: 'tasks', params: {id: decodeURIComponent(rest[0])}};
  if (name === 'submit') return {view: submit, name: 'submit', params: {}};
  if (name === 'service') return {view: service, name: 'service', params: {}};
  return {view: tasks, name: 'tasks', params: {}};
}

async function render() {
  const my = ++seq;
  if (unmount) {
    try {
      unmount();
    } catch (e) {
      console.warn('unmount failed', e);
    }
    unmount = null;
  }
  const r = route();
  for (const a of document.querySelectorAll('nav a[data-view]')) {
    if (a.dataset.view === r.name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  announce('');
  try {
    const u = await r.view.mount(main, r.params);
    if (my !== seq) u?.();  // navigated away meanwhile
    else unmount = u || null;
  } catch (e) {
    console.warn('view failed', e);
    announce(`Could not show this view: ${e.message}`, 'error');
  }
  updateTokenButton();
}

function updateTokenButton() {
  document.getElementById('token-button').hidden = !token();
}

document.getElementById('token-button').addEventListener('click', () => {
  forgetToken();
  updateTokenButton();
  announce('Token forgotten; the api will ask again when it needs one.');
});

window.addEventListener('hashchange', () => {
  render();
  main.focus({preventScroll: true});
});
document.getElementById('token-form').addEventListener('submit', () => setTimeout(updateTokenButton));
if (!location.hash) history.replaceState(null, '', '#/tasks');
render();

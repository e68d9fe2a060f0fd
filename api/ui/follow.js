// Following one task until it ends: its history and live changes from
// GET /api/v1/tasks/{id}/events?stream=1 (the whole history first, then live, `event: end`
// after the terminal state), or, where the api has no stream, GET .../events and polling the
// task every second.

import {get} from './api.js';
import {openEventStream} from './sse.js';
import {TERMINAL, sleep, stats} from './util.js';

// handlers: onTask(task), onHistory(events) (replaces), onEvent(event) (appends; event.id set),
// onProgress(value), onMode('events' | 'polling')
export function followTask(id, handlers = {}) {
  const base = `/api/v1/tasks/${encodeURIComponent(id)}`;
  const ctl = new AbortController();
  let stream = null;
  let closed = false;
  let lastState = null;

  const fetchTask = async () => {
    const t = await get(base, {signal: ctl.signal});
    if (closed) return t;
    lastState = t.state;
    handlers.onTask?.(t);
    return t;
  };
  const fetchHistory = async () => {
    const body = await get(`${base}/events`, {signal: ctl.signal});
    if (!closed) handlers.onHistory?.(body.events || []);
  };

  const poll = async () => {
    handlers.onMode?.('polling');
    let seen = null;
    while (!closed) {
      try {
        const t = await fetchTask();
        stats.polls++;
        if (t.state !== seen) {
          seen = t.state;
          await fetchHistory();
        }
        if (TERMINAL.has(t.state)) return;
      } catch (e) {
        if (closed) return;
        console.warn('task poll failed', e);
      }
      await sleep(1000, ctl.signal);
    }
  };

  const done = (async () => {
    let t;
    try {
      t = await fetchTask();
    } catch (e) {
      if (!closed) handlers.onError?.(e);
      return;
    }
    if (TERMINAL.has(t.state)) {
      await fetchHistory().catch((e) => { if (!closed) handlers.onError?.(e); });
      return;
    }
    let refreshing = null;
    const refresh = () => {
      refreshing ??= sleep(100).then(() => {
        refreshing = null;
        return closed ? null : fetchTask().catch((e) => console.warn('task refresh failed', e));
      });
    };
    let history = true;
    stream = openEventStream(`${base}/events?stream=1`, {
      onOpen: () => {
        handlers.onMode?.('events');
        if (history) handlers.onHistory?.([]);  // the stream starts with the whole history
        history = false;
      },
      onEvent: (type, data, eventId) => {
        let d;
        try {
          d = JSON.parse(data);
        } catch {
          return;
        }
        if (type === 'state') {
          handlers.onEvent?.({...d, id: d.id ?? eventId});
          if (d.state !== lastState) refresh();
        } else if (type === 'progress') {
          handlers.onProgress?.(d.progress);
        } else if (type === 'end') {
          refresh();
        }
      },
    });
    // Until the stream ends (`end`) or the api turns out to have none: then polling.
    const how = await stream.done;
    if (how === 'unsupported' && !closed) await poll();
    if (refreshing) await refreshing;
  })();

  return {
    done,
    close() {
      closed = true;
      ctl.abort();
      stream?.close();
    },
  };
}

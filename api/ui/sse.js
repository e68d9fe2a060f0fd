// Server-sent events over fetch(): EventSource cannot send an Authorization header, so the
// stream is read with fetch() and a ReadableStream and parsed here (the WHATWG "event stream
// interpretation": fields event, data, id, retry; ':' comment lines are keep-alives), and
// reconnected with the Last-Event-ID request header after the server's retry delay.
//
//   const s = openEventStream('/api/v1/events', {
//     onEvent(type, data, id) {},      // data: the text (JSON.parse it)
//     onOpen() {}, onDrop(err) {},     // connected; lost (it reconnects by itself)
//     onUnsupported(status) {},        // 404/405/501 or no event stream: not here, no retry
//     onEnd() {},                      // an `event: end` arrived: the stream is over, no retry
//   });
//   s.close();

import {apiFetch} from './api.js';
import {sleep, stats} from './util.js';

export function openEventStream(url, handlers = {}) {
  const ctl = new AbortController();
  let lastId = handlers.lastEventId ?? null;
  let retryMs = 3000;
  let closed = false;

  const dispatch = (type, data, id) => {
    stats.sseEvents++;
    try {
      handlers.onEvent?.(type, data, id);
    } catch (e) {
      console.warn('event handler failed', e);
    }
  };

  // Parses a body; resolves true when `end` was received.
  async function pump(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let event = '';
    let data = [];
    let ended = false;
    let idBuffer = lastId;
    const line = (l) => {
      if (l === '') {
        // An id counts once its event is complete: an event cut off before its blank line is
        // sent again after reconnecting (the WHATWG "last event ID buffer" and "string").
        lastId = idBuffer;
        if (data.length) {
          const type = event || 'message';
          dispatch(type, data.join('\n'), lastId);
          if (type === 'end') ended = true;
        }
        event = '';
        data = [];
        return;
      }
      if (l.startsWith(':')) return;  // a comment: keep-alive
      const colon = l.indexOf(':');
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? '' : l.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'id') {
        if (!value.includes('\0')) idBuffer = value;
      } else if (field === 'retry') {
        if (/^\d+$/.test(value)) retryMs = Number(value);
      }
    };
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += decoder.decode(value, {stream: true});
        // Lines end in CRLF, LF or CR; a CR at the very end may be the first half of a CRLF.
        let start = 0;
        for (let i = 0; i < buf.length; i++) {
          const c = buf[i];
          if (c !== '\n' && c !== '\r') continue;
          if (c === '\r' && i + 1 === buf.length) break;
          line(buf.slice(start, i));
          if (c === '\r' && buf[i + 1] === '\n') i++;
          start = i + 1;
        }
        buf = buf.slice(start);
        if (ended) {
          await reader.cancel().catch(() => {});
          break;
        }
      }
    } finally {
      reader.releaseLock?.();
    }
    return ended;
  }

  const done = (async () => {
    let failures = 0;
    while (!closed) {
      let res;
      try {
        const headers = {Accept: 'text/event-stream', 'Cache-Control': 'no-cache'};
        if (lastId !== null) headers['Last-Event-ID'] = lastId;
        res = await apiFetch(url, {headers, signal: ctl.signal, cache: 'no-store'});
      } catch (e) {
        if (closed) return 'closed';
        failures++;
        handlers.onDrop?.(e);
        await sleep(Math.min(30000, retryMs * failures), ctl.signal);
        continue;
      }
      if ([404, 405, 501].includes(res.status)) {
        handlers.onUnsupported?.(res.status);
        return 'unsupported';
      }
      const type = res.headers.get('Content-Type') || '';
      if (res.ok && !type.startsWith('text/event-stream')) {
        // An api that does not stream answers this address with something else (JSON).
        res.body?.cancel().catch(() => {});
        handlers.onUnsupported?.(res.status);
        return 'unsupported';
      }
      if (!res.ok) {
        res.body?.cancel().catch(() => {});
        if (res.status === 401 || res.status === 403) {
          handlers.onDrop?.(new Error(`HTTP ${res.status}`));
          return 'refused';
        }
        failures++;
        handlers.onDrop?.(new Error(`HTTP ${res.status}`));
        await sleep(Math.min(30000, retryMs * failures), ctl.signal);
        continue;
      }
      failures = 0;
      stats.sseConnects++;
      handlers.onOpen?.();
      let ended = false;
      try {
        ended = await pump(res.body);
      } catch (e) {
        if (closed) return 'closed';
        handlers.onDrop?.(e);
      }
      if (ended) {
        handlers.onEnd?.();
        return 'end';
      }
      if (closed) return 'closed';
      handlers.onDrop?.(new Error('the stream ended'));
      await sleep(retryMs, ctl.signal);
    }
    return 'closed';
  })();

  return {
    done,
    get lastEventId() {
      return lastId;
    },
    close() {
      closed = true;
      ctl.abort();
    },
  };
}

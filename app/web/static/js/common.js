// Shared by the three pages: DOM helper, API wrapper, alerts, the live stream, time formatting.
// Plain ES2020, no build step; exposed as window.TrackOPZ for the page scripts (loaded after it).
'use strict';

(function () {
  const T = {};
  window.TrackOPZ = T;

  // ---------------------------------------------------------------- DOM

  /** h('li', {class: 'x', dataset: {id: 1}, on: {click: fn}}, 'text', child) builds an element. */
  function h(tag, attrs, ...children) {
    const svg = tag.startsWith('svg:');
    const el = svg
      ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
      : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
      else if (key === 'text') el.textContent = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  T.h = h;
  T.$ = (selector, root = document) => root.querySelector(selector);
  T.$$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  T.byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

  /** Shows the `empty` paragraph for a list when it has no items. */
  T.setEmpty = function (name, isEmpty) {
    const p = document.querySelector(`[data-empty="${name}"]`);
    if (p) p.hidden = !isEmpty;
  };

  T.debounce = function (fn, ms) {
    let timer = null;
    return function (...args) {
      clearTimeout(timer);
      timer = setTimeout(() => fn.apply(this, args), ms);
    };
  };

  /** Wraps an async loader so only the answer to the latest call is applied (older ones are late). */
  T.latestOnly = function (load, apply) {
    let seq = 0;
    return async function (...args) {
      const mine = ++seq;
      const result = await load(...args);
      if (mine === seq) apply(result, ...args);
    };
  };

  // ---------------------------------------------------------------- alerts

  function showIn(testId, message, { dismissAfterMs } = {}) {
    const region = T.byTestId(testId);
    region.replaceChildren();
    if (!message) return;
    const box = h('div', { class: 'alert' },
      h('p', { class: 'alert-text' }, message), // a string, or [text, link, ...]
      h('button', {
        type: 'button', class: 'btn-plain alert-close', 'aria-label': 'Dismiss',
        on: { click: () => region.replaceChildren() },
      }, '×'));
    region.append(box);
    if (dismissAfterMs) setTimeout(() => { if (box.isConnected) box.remove(); }, dismissAfterMs);
  }

  /** Puts an error sentence in the page's role="alert" region; it stays until dismissed or replaced. */
  T.showError = (message) => showIn('error-region', message);
  T.clearError = () => showIn('error-region', null);
  /** A confirmation in the role="status" region, gone after a while. */
  T.showNotice = (message) => showIn('notice-region', message, { dismissAfterMs: 12000 });

  /** Shows "context: what the server said" for any failure, API or not. */
  T.reportError = function (context, err) {
    const text = err instanceof ApiError ? err.message : `Something went wrong in the page (${err && err.message}).`;
    const message = context ? `${context}: ${text}` : text;
    T.showError(err.status === 401 ? [message, ' ', signInLink()] : message);
    if (!(err instanceof ApiError)) console.error(err);
  };

  const signInLink = () => h('a', {
    href: `/login?next=${encodeURIComponent(window.location.pathname)}`, 'data-testid': 'sign-in-again',
  }, 'Sign in again');

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(message, status, details) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.details = details || null;
    }
  }
  T.ApiError = ApiError;

  /** Flattens {"quantity": ["Must be greater than 0."]} (any nesting) to "quantity: Must be greater than 0." */
  function describeDetails(details, prefix = '') {
    if (details === null || details === undefined) return [];
    if (typeof details !== 'object') return [prefix ? `${prefix}: ${details}` : String(details)];
    if (Array.isArray(details)) {
      return details.flatMap((d) => describeDetails(d, prefix));
    }
    return Object.entries(details).flatMap(([key, value]) =>
      describeDetails(value, ['json', 'query', '_schema'].includes(key) ? prefix : key));
  }

  /** crypto.randomUUID exists only on https/localhost; shop-floor tablets may use plain http on the LAN. */
  T.uuid = function () {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  };

  const csrfMeta = document.querySelector('meta[name="csrf-token"]');

  /**
   * Calls the JSON API. Resolves with the body when it says success; otherwise rejects with an
   * ApiError whose message is the contract's error sentence (plus per-field details).
   */
  async function request(method, path, body, { fresh = false } = {}) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin' };
    if (method === 'GET') {
      // Always revalidate: the API answers 304 when nothing changed. `fresh`: ask for the whole
      // answer, for what changes without changing the ETag (the dashboard's live screens).
      init.cache = fresh ? 'reload' : 'no-cache';
    } else {
      headers['Content-Type'] = 'application/json';
      headers['Idempotency-Key'] = T.uuid(); // one key per user action: a retried request changes nothing twice
      if (csrfMeta) headers['X-CSRF-Token'] = csrfMeta.content;
      init.body = JSON.stringify(body ?? {});
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError('The server could not be reached. Check the network and try again.', 0);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (err) {
      data = null;
    }
    if (!response.ok || !data || data.success === false) {
      let message = (data && data.error) || `The server answered ${response.status} ${response.statusText}.`.replace(' .', '.');
      const details = describeDetails(data && data.details);
      if (details.length) message = `${message} (${details.join('; ')})`;
      throw new ApiError(message, response.status, data && data.details);
    }
    return data;
  }

  T.api = {
    get: (path, options) => request('GET', path, undefined, options),
    post: (path, body) => request('POST', path, body),
    patch: (path, body) => request('PATCH', path, body),
  };

  /**
   * Wires a form: native validation, one request per submit with the button disabled meanwhile,
   * errors shown in words. `action(values, form)` gets the form's fields as an object.
   */
  T.onSubmit = function (form, context, action) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const buttons = T.$$('button[type="submit"]', form);
      buttons.forEach((b) => { b.disabled = true; });
      form.setAttribute('aria-busy', 'true');
      T.clearError();
      try {
        await action(Object.fromEntries(new FormData(form)), form);
      } catch (err) {
        T.reportError(typeof context === 'function' ? context() : context, err);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
        form.removeAttribute('aria-busy');
      }
    });
  };

  /** Runs a background load and shows its failure instead of dropping it. */
  T.guard = (context, promise) => promise.catch((err) => T.reportError(context, err));

  // ---------------------------------------------------------------- time

  const SECOND = 1000;
  const toDate = (value) => (value instanceof Date ? value : new Date(value));
  const pad = (n) => String(n).padStart(2, '0');

  /** 3725 -> "1 h 02 min"; 45 -> "45 s"; null -> "—". */
  T.formatDuration = function (seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${pad(s % 60)} s`;
    const hrs = Math.floor(m / 60);
    if (hrs < 24) return `${hrs} h ${pad(m % 60)} min`;
    return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
  };

  /** Running clock text: "0:04:09", "2 d 05:18:12" past a day. */
  T.formatClock = function (seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const days = Math.floor(s / 86400);
    const hours = Math.floor(s / 3600) % 24;
    const clock = `${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
    return days ? `${days} d ${pad(hours)}:${clock}` : `${hours}:${clock}`;
  };

  /** "just now", "40 s ago", "5 min ago", "3 h ago", "2 d ago". */
  T.timeAgo = function (value) {
    const s = Math.round((Date.now() - toDate(value).getTime()) / SECOND);
    if (Number.isNaN(s)) return '—';
    if (s < 5) return 'just now';
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  };

  T.formatDateTime = function (value) {
    if (!value) return '—';
    const d = toDate(value);
    if (Number.isNaN(d.getTime())) return '—';
    // Today: the time to the second; earlier: day and minute. 24-hour, as shop-floor clocks read.
    if (d.toDateString() === new Date().toDateString()) {
      return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
    }
    return d.toLocaleString(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  };

  /** A <time> that keeps itself current: kind 'clock' counts up from `value`, 'ago' reads "5 min ago". */
  T.liveTime = function (value, kind = 'ago') {
    if (!value) return h('span', null, '—');
    const el = h('time', { datetime: value, title: T.formatDateTime(value) });
    el.dataset[kind === 'clock' ? 'since' : 'ago'] = value;
    tickOne(el);
    return el;
  };

  function tickOne(el) {
    if (el.dataset.since) {
      el.textContent = T.formatClock((Date.now() - toDate(el.dataset.since).getTime()) / SECOND);
    } else if (el.dataset.ago) {
      el.textContent = T.timeAgo(el.dataset.ago);
    }
  }
  setInterval(() => T.$$('[data-since], [data-ago]').forEach(tickOne), SECOND);

  // ---------------------------------------------------------------- the live stream

  const STREAM_PATH = '/api/live-products/dispatchable/stream';
  const OFFLINE_AFTER_MS = 20000; // reconnecting for longer than this reads as offline
  const MAX_BACKOFF_MS = 30000;

  function setConnState(state) {
    const el = T.byTestId('conn-status');
    if (!el || el.dataset.state === state) return;
    el.dataset.state = state;
    el.textContent = state;
  }

  const toId = (value) => {
    const n = Number.parseInt(value, 10);
    return Number.isFinite(n) ? n : null;
  };

  /**
   * Connects to the event stream and keeps it connected.
   *   onConnected(data)      each connection_established (first connect and every reconnect):
   *                          the page re-syncs what it shows from it or from the API.
   *   onEvent(message, meta) every other event, once, in id order; meta.replayed is true when the
   *                          event is older than the latest snapshot (a catch-up after a reconnect).
   * The position (last event id seen) goes with every (re)connect as ?lastEventId= so nothing is
   * missed; events at or below it are dropped so nothing is applied twice.
   */
  T.connectStream = function ({ onConnected, onEvent }) {
    let source = null;
    let lastEventId = null; // highest event id applied
    let snapshotId = null; // lastEventId of the latest connection_established
    let urlPosition = null; // the lastEventId the current source was opened with
    let sawIdOnSource = false; // then the browser's own retry sends Last-Event-ID itself
    let failures = 0; // consecutive, for the backoff
    let downSince = null; // when the connection was last lost
    let retryTimer = null;

    function open() {
      T.byTestId('conn-status').hidden = false;
      clearTimeout(retryTimer);
      retryTimer = null;
      if (source) source.close();
      urlPosition = lastEventId;
      sawIdOnSource = false;
      const url = lastEventId === null ? STREAM_PATH : `${STREAM_PATH}?lastEventId=${lastEventId}`;
      source = new EventSource(url);
      source.onopen = markLive;
      source.onmessage = handleMessage;
      source.onerror = handleError;
    }

    function handleMessage(e) {
      let message;
      try {
        message = JSON.parse(e.data);
      } catch (err) {
        console.error('Unreadable stream message', e.data);
        return;
      }
      if (message.type === 'connection_established') {
        const id = toId(message.data && message.data.lastEventId);
        snapshotId = id;
        // Keep our own position so the replay that follows fills the gap, unless the server says
        // it cannot replay (resync) or its ids restarted below ours.
        if (lastEventId === null || message.data.resync || (id !== null && id < lastEventId)) {
          lastEventId = id;
        }
        markLive();
        onConnected(message.data || {});
        return;
      }
      const id = toId(e.lastEventId);
      if (id !== null) {
        sawIdOnSource = true;
        if (lastEventId !== null && id <= lastEventId) return; // already applied
        lastEventId = id;
      }
      onEvent(message, { id, replayed: id !== null && snapshotId !== null && id <= snapshotId });
    }

    function markLive() {
      failures = 0;
      downSince = null;
      setConnState('live');
    }

    function handleError() {
      failures += 1;
      downSince = downSince ?? Date.now();
      const state = source.readyState;
      setConnState(!navigator.onLine || Date.now() - downSince > OFFLINE_AFTER_MS ? 'offline' : 'reconnecting');
      // The browser retries by itself while CONNECTING; that retry resumes at the right place only if
      // it will send our position (an id seen on this source, or the one in its URL).
      if (state === EventSource.CONNECTING && (sawIdOnSource || urlPosition === lastEventId)) return;
      source.close();
      if (state === EventSource.CLOSED) reopenUnlessSignedOut();
      else scheduleReopen();
    }

    /** The server refused the stream: a lapsed sign-in does not mend by retrying, so say so. */
    function reopenUnlessSignedOut() {
      T.api.get('/api/me').then(scheduleReopen, (err) => {
        if (err.status !== 401) return scheduleReopen();
        setConnState('offline');
        return T.reportError('Live updates stopped', err);
      });
    }

    function scheduleReopen() {
      if (retryTimer) return;
      const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(failures - 1, 5));
      retryTimer = setTimeout(open, backoff / 2 + Math.random() * (backoff / 2));
    }

    window.addEventListener('offline', () => setConnState('offline'));
    window.addEventListener('online', () => {
      if (!source || source.readyState !== EventSource.OPEN) open();
    });
    open();
    return {
      get lastEventId() { return lastEventId; },
      reconnect: open,
    };
  };

  // ---------------------------------------------------------------- shared domain bits

  T.productLabel = (p) => (p.code ? `${p.name} (${p.code})` : p.name || `Product #${p.productId ?? p.id}`);

  const ACTION_VERBS = {
    move_to_past: 'moved to past',
    reactivate: 'reactivated',
    start_job: 'started a stage',
    complete_stage: 'finished a stage',
  };

  /** "moved to past by ana — dispatched", prefixed with `subject` when given. */
  T.describeTransition = function (t, subject) {
    const verb = ACTION_VERBS[t.action] || `set ${t.newState || t.toState}`;
    const by = t.actor ? ` by ${t.actor}` : '';
    const why = t.reason ? ` — ${t.reason}` : '';
    return `${subject ? `${subject} ` : ''}${verb}${by}${why}`;
  };

  /** One readable line for a stream event, as the dashboard feed shows it. */
  T.describeEvent = function ({ type, data = {} }) {
    const who = data.productName || `Product #${data.productId}`;
    switch (type) {
      case 'product_moved_to_past':
      case 'product_reactivated':
      case 'product_state_updated':
        return T.describeTransition(data, who);
      case 'job_started':
        return `${who} started ${data.stage ? `stage ${data.stage}` : 'a new stage'} on ${data.machineName}`
          + `${data.operator ? ` (operator ${data.operator})` : ''}`;
      case 'operator_update_logged':
        return `${data.operator} logged ${data.quantity} finished${data.scrapQuantity ? ` and ${data.scrapQuantity} scrap` : ''}`
          + ` on ${who} (${data.quantityProduced} in this stage)`;
      case 'machine_status_changed':
        return `${data.machineName} is now ${data.status}`;
      case 'dispatchable_products_update':
        return `Dispatch list: ${data.added.length} added, ${data.removed.length} removed, ${data.count} live`;
      default:
        return `${type}${data.productName ? `: ${data.productName}` : ''}`;
    }
  };
})();

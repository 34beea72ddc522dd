// Dashboard: counters and machine board (re-fetched, debounced, on events and every minute), a
// live activity feed fed by the stream, and a 30-day chart drawn as inline SVG.
'use strict';

(function () {
  const T = window.TrackOPZ;
  const { h, api } = T;

  const FEED_LIMIT = 100;
  const STAT_LABELS = [
    ['liveProducts', 'Live products'],
    ['pastProducts', 'Past products'],
    ['dispatchableProducts', 'Dispatchable'],
    ['dispatchedToday', 'Dispatched today'],
    ['transitionsToday', 'Transitions today'],
    ['totalProducts', 'Products'],
    ['activeMachines', 'Machines running'],
    ['inactiveMachines', 'Machines not running'],
    ['totalMachines', 'Machines'],
  ];
  // Events that write a Transition row (starting a job writes one or two), so change the chart.
  const TRANSITION_EVENTS = new Set(['product_moved_to_past', 'product_reactivated', 'product_state_updated', 'job_started']);

  // ------------------------------------------------------------ counters and machines

  function renderStats(stats, realtime) {
    const items = STAT_LABELS.map(([key, label]) => [key, label, stats[key]]);
    items.push(['connectedClients', 'Live screens', realtime.connectedClients]);
    T.byTestId('stats').replaceChildren(...items.map(([key, label, value]) =>
      h('div', { class: 'stat', 'data-stat': key },
        h('dt', null, label),
        h('dd', null, value ?? '—'))));
  }

  function renderMachines(machines) {
    const board = T.byTestId('machine-board');
    board.replaceChildren(...machines.map((m) => h('li', { class: 'machine', 'data-testid': 'machine', 'data-machine-id': m.id },
      h('span', { class: 'machine-name' }, m.name),
      h('span', { class: `badge status-${m.status}` }, m.status),
      h('span', { class: 'machine-product' }, m.currentProduct ? m.currentProduct.name : 'No product'),
      h('span', { class: 'muted' }, 'Last activity ', T.liveTime(m.lastActivity)))));
    board.removeAttribute('aria-busy');
    T.setEmpty('machines', machines.length === 0);
  }

  let feedSeeded = false;
  const loadStatus = T.latestOnly(
    (options) => api.get('/api/dashboard/status', options),
    ({ dashboard }) => {
      renderStats(dashboard.stats, dashboard.realtime);
      renderMachines(dashboard.machineStatus);
      if (!feedSeeded) {
        feedSeeded = true;
        // Older than anything the stream brought meanwhile, so they go below it, newest first.
        dashboard.recentActivity.forEach((t) => addFeedLine({
          type: t.action, text: T.describeTransition(t, t.productName), timestamp: t.createdAt,
        }, { older: true }));
      }
    });
  // Once this page's stream is up it counts among the live screens; that count is not in the
  // ETag, so a revalidated answer would still show the count from before it connected: the
  // refresh after a (re)connect asks for the whole answer. One debounced refresh for both, so
  // a revalidation sent right behind it cannot bring the older answer back.
  let fresh = false;
  const refreshStatus = T.debounce(() => {
    const options = { fresh };
    fresh = false;
    return T.guard('Could not refresh the counters', loadStatus(options));
  }, 300);
  const recount = () => {
    fresh = true;
    refreshStatus();
  };
  // Products and machines added, machines renamed and other screens opened or closed send no
  // event: the figures are asked for again every minute, whole, while the page is visible.
  const RECOUNT_MS = 60000;
  setInterval(() => {
    if (!document.hidden) recount();
  }, RECOUNT_MS);

  // ------------------------------------------------------------ activity feed

  function addFeedLine(message, { replayed = false, older = false } = {}) {
    const feed = T.byTestId('activity-feed');
    const line = h('li', { class: `feed-line feed-${message.type}`, 'data-type': message.type },
      h('span', { class: 'feed-text' }, message.text || T.describeEvent(message)),
      h('span', { class: 'feed-when' }, replayed ? 'while offline · ' : '', T.liveTime(message.timestamp)));
    if (older) feed.append(line);
    else feed.prepend(line);
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
    T.setEmpty('feed', false);
  }

  // ------------------------------------------------------------ 30-day chart

  const SERIES = [
    ['dispatches', 'Dispatches'],
    ['transitions', 'Transitions'],
  ];

  /** A round tick step (1, 2 or 5 x 10^k) giving about four whole-number gridlines up to `max`. */
  function tickStep(max) {
    const rough = Math.max(1, max / 4);
    const magnitude = 10 ** Math.floor(Math.log10(rough));
    return [1, 2, 5, 10].map((m) => m * magnitude).find((v) => v >= rough);
  }

  const dayLabel = (iso) => new Date(`${iso}T00:00:00Z`)
    .toLocaleDateString(undefined, { day: 'numeric', month: 'short', timeZone: 'UTC' });

  function renderChart(days) {
    const W = 960;
    const H = 300;
    const m = { top: 16, right: 12, bottom: 36, left: 48 };
    const plotW = W - m.left - m.right;
    const plotH = H - m.top - m.bottom;
    const max = Math.max(0, ...days.flatMap((d) => [d.dispatches, d.transitions]));
    const step = tickStep(max);
    const top = step * Math.max(1, Math.ceil(max / step));
    const y = (v) => m.top + plotH - (v / top) * plotH;
    const slot = plotW / Math.max(days.length, 1);
    const barW = Math.max(2, slot * 0.36);

    const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg', 'data-testid': 'chart-svg' });
    const totals = SERIES.map(([key, label]) => `${days.reduce((s, d) => s + d[key], 0)} ${label.toLowerCase()}`);
    svg.append(h('svg:title', null, `Last ${days.length} days: ${totals.join(', ')}.`));

    for (let v = 0; v <= top; v += step) {
      svg.append(
        h('svg:line', { class: 'chart-grid', x1: m.left, x2: W - m.right, y1: y(v), y2: y(v) }),
        h('svg:text', { class: 'chart-tick', x: m.left - 8, y: y(v) + 4, 'text-anchor': 'end' }, v));
    }
    days.forEach((d, i) => {
      const x0 = m.left + i * slot + (slot - 2 * barW) / 2;
      SERIES.forEach(([key, label], k) => {
        svg.append(h('svg:rect', {
          class: `chart-bar bar-${key}`, x: x0 + k * barW, y: y(d[key]), width: barW - 1, height: Math.max(0, y(0) - y(d[key])),
        }, h('svg:title', null, `${dayLabel(d.date)}: ${d[key]} ${label.toLowerCase()}`)));
      });
      // Label every 5th day, counted back from today so the last bar is always labelled.
      if ((days.length - 1 - i) % 5 === 0) {
        svg.append(h('svg:text', { class: 'chart-tick', x: m.left + (i + 0.5) * slot, y: H - m.bottom + 20, 'text-anchor': 'middle' }, dayLabel(d.date)));
      }
    });
    svg.append(h('svg:line', { class: 'chart-axis', x1: m.left, x2: W - m.right, y1: y(0), y2: y(0) }));

    const legend = h('ul', { class: 'legend' }, SERIES.map(([key, label]) =>
      h('li', null, h('span', { class: `swatch bar-${key}`, 'aria-hidden': 'true' }), label)));
    const box = T.byTestId('daily-chart');
    const table = h('details', { class: 'chart-table', open: T.$('details', box)?.open },
      h('summary', null, 'Show the numbers'),
      h('table', { class: 'table' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Day'), SERIES.map(([, label]) => h('th', { scope: 'col', class: 'num' }, label)))),
        h('tbody', null, [...days].reverse().map((d) => h('tr', null,
          h('th', { scope: 'row' }, dayLabel(d.date)),
          SERIES.map(([key]) => h('td', { class: 'num' }, d[key])))))));
    box.replaceChildren(svg, legend, table);
  }

  const loadDaily = T.latestOnly(() => api.get('/api/dashboard/daily?days=30'), (body) => renderChart(body.days));
  const refreshDaily = T.debounce(() => T.guard('Could not refresh the daily chart', loadDaily()), 500);

  // ------------------------------------------------------------ live updates

  T.guard('Could not load the dashboard', loadStatus());
  T.guard('Could not load the daily chart', loadDaily());
  T.connectStream({
    onConnected() {
      recount();
      refreshDaily();
    },
    onEvent(message, { replayed }) {
      if (message.type !== 'dispatchable_products_update') addFeedLine(message, { replayed });
      refreshStatus();
      if (TRANSITION_EVENTS.has(message.type)) refreshDaily();
    },
  });
})();

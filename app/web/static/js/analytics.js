// Dashboard analytics: stage and machine times (median, p90), lead time, output and scrap per
// day, dispatches per day and destination, for a date range, drawn as inline SVG (no library),
// each with its numbers in a table; and the CSV/XLSX report links for the same range.
'use strict';

(function () {
  const T = window.TrackOPZ;
  const { h, api } = T;
  const mount = T.byTestId('analytics');
  if (!mount) return;
  mount.style.gridColumn = '1 / -1'; // the whole width of the dashboard's grid

  const PALETTE = ['#0b5cad', '#e07b00', '#2e7d32', '#8e24aa', '#c62828', '#00838f', '#6d4c41'];
  const MUTED = '#8a96a6';
  const W = 960;

  const isoDay = (d) => d.toISOString().slice(0, 10);
  const today = new Date();
  const monthAgo = new Date(Date.now() - 29 * 86400000);
  const dayLabel = (iso) => new Date(`${iso}T00:00:00Z`)
    .toLocaleDateString(undefined, { day: 'numeric', month: 'short', timeZone: 'UTC' });

  function tickStep(max) {
    const rough = Math.max(1, max / 4);
    const magnitude = 10 ** Math.floor(Math.log10(rough));
    return [1, 2, 5, 10].map((m) => m * magnitude).find((v) => v >= rough);
  }

  const svg = (height, title, testId) => h('svg:svg', {
    viewBox: `0 0 ${W} ${height}`, role: 'img', class: 'chart-svg', 'data-testid': testId,
  }, h('svg:title', null, title));

  const table = (head, rows) => h('details', { class: 'chart-table' },
    h('summary', null, 'Show the numbers'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
      h('thead', null, h('tr', null, head.map(([label, num]) => h('th', { scope: 'col', class: num ? 'num' : null }, label)))),
      h('tbody', null, rows.map((cells) => h('tr', null, cells.map((c, i) => h('td', { class: head[i][1] ? 'num' : null }, c))))))));

  const legend = (items) => h('ul', { class: 'legend' }, items.map(([label, color]) =>
    h('li', null, h('span', { class: 'swatch', 'aria-hidden': 'true', dataset: { color } }), label)));

  /** Swatches take their colour through the CSSOM (a strict style-src refuses style attributes). */
  function paintSwatches(root) {
    T.$$('.swatch[data-color]', root).forEach((s) => { s.style.background = s.dataset.color; });
  }

  // ------------------------------------------------------------ times: median and p90 bars

  function timeChart(rows, labelOf, title, testId) {
    if (!rows.length) return h('p', { class: 'empty' }, 'No stage ended in this range.');
    const rowH = 34;
    const m = { top: 8, right: 110, bottom: 24, left: 200 };
    const height = m.top + m.bottom + rows.length * rowH;
    const max = Math.max(...rows.map((r) => r.p90Seconds || 0), 1);
    const x = (v) => m.left + (v / max) * (W - m.left - m.right);
    const chart = svg(height, title, testId);
    rows.forEach((r, i) => {
      const y = m.top + i * rowH;
      chart.append(
        h('svg:text', { class: 'chart-tick', x: m.left - 8, y: y + rowH / 2 + 4, 'text-anchor': 'end' }, `${labelOf(r)} (${r.count})`),
        h('svg:rect', { x: m.left, y: y + 5, width: Math.max(1, x(r.p90Seconds) - m.left), height: rowH - 10, fill: '#b9d3ee' },
          h('svg:title', null, `${labelOf(r)}: p90 ${T.formatDuration(r.p90Seconds)}`)),
        h('svg:rect', { x: m.left, y: y + 11, width: Math.max(1, x(r.medianSeconds) - m.left), height: rowH - 22, fill: PALETTE[0] },
          h('svg:title', null, `${labelOf(r)}: median ${T.formatDuration(r.medianSeconds)}`)),
        h('svg:text', { class: 'chart-tick', x: x(r.p90Seconds) + 6, y: y + rowH / 2 + 4 }, T.formatDuration(r.medianSeconds)));
    });
    chart.append(h('svg:line', { class: 'chart-axis', x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom }));
    const box = h('div', null, chart, legend([['Median', PALETTE[0]], ['90th percentile', '#b9d3ee']]),
      table([['Name'], ['Jobs', true], ['Median', true], ['p90', true]],
        rows.map((r) => [labelOf(r), r.count, T.formatDuration(r.medianSeconds), T.formatDuration(r.p90Seconds)])));
    paintSwatches(box);
    return box;
  }

  // ------------------------------------------------------------ per day, stacked

  function daysBetween(from, to) {
    const days = [];
    for (let d = new Date(`${from}T00:00:00Z`); isoDay(d) <= to; d = new Date(d.getTime() + 86400000)) days.push(isoDay(d));
    return days;
  }

  /** series: [{key, label, color, values: Map(day -> number)}], stacked per day. */
  function stackedDays(days, series, title, testId) {
    const H = 260;
    const m = { top: 12, right: 12, bottom: 36, left: 56 };
    const plotH = H - m.top - m.bottom;
    const totals = days.map((d) => series.reduce((s, x) => s + (x.values.get(d) || 0), 0));
    const max = Math.max(0, ...totals);
    const step = tickStep(max);
    const top = step * Math.max(1, Math.ceil(max / step));
    const y = (v) => m.top + plotH - (v / top) * plotH;
    const slot = (W - m.left - m.right) / Math.max(days.length, 1);
    const chart = svg(H, title, testId);
    for (let v = 0; v <= top; v += step) {
      chart.append(h('svg:line', { class: 'chart-grid', x1: m.left, x2: W - m.right, y1: y(v), y2: y(v) }),
        h('svg:text', { class: 'chart-tick', x: m.left - 8, y: y(v) + 4, 'text-anchor': 'end' }, v));
    }
    const labelEvery = Math.max(1, Math.ceil(days.length / 10));
    days.forEach((d, i) => {
      let base = 0;
      series.forEach((s) => {
        const v = s.values.get(d) || 0;
        if (!v) return;
        chart.append(h('svg:rect', {
          x: m.left + i * slot + slot * 0.15, y: y(base + v), width: Math.max(1, slot * 0.7), height: y(base) - y(base + v), fill: s.color,
        }, h('svg:title', null, `${dayLabel(d)}: ${v} ${s.label}`)));
        base += v;
      });
      if ((days.length - 1 - i) % labelEvery === 0) {
        chart.append(h('svg:text', { class: 'chart-tick', x: m.left + (i + 0.5) * slot, y: H - m.bottom + 20, 'text-anchor': 'middle' }, dayLabel(d)));
      }
    });
    chart.append(h('svg:line', { class: 'chart-axis', x1: m.left, x2: W - m.right, y1: y(0), y2: y(0) }));
    return chart;
  }

  function outputChart(body, days) {
    const good = new Map();
    const scrap = new Map();
    const people = new Map(); // "machine · operator" -> [quantity, scrap]
    body.output.forEach((r) => {
      good.set(r.date, (good.get(r.date) || 0) + r.quantity);
      scrap.set(r.date, (scrap.get(r.date) || 0) + r.scrap);
      const key = `${r.machineName} · ${r.operator}`;
      const t = people.get(key) || [0, 0];
      people.set(key, [t[0] + r.quantity, t[1] + r.scrap]);
    });
    const box = h('div', null,
      h('p', { class: 'muted', 'data-testid': 'output-totals' }, `${body.totals.quantity} made, ${body.totals.scrap} scrapped in ${body.totals.updates} updates.`),
      stackedDays(days, [
        { label: 'made', color: PALETTE[2], values: good },
        { label: 'scrap', color: PALETTE[4], values: scrap },
      ], 'Output and scrap per day', 'output-chart'),
      legend([['Made', PALETTE[2]], ['Scrap', PALETTE[4]]]),
      table([['Machine · operator'], ['Made', true], ['Scrap', true]],
        [...people].sort((a, b) => b[1][0] - a[1][0]).map(([k, [q, s]]) => [k, q, s])));
    paintSwatches(box);
    return box;
  }

  function dispatchChart(body, days) {
    const byDest = new Map();
    body.dispatches.forEach((r) => {
      const name = r.destination || '(none)';
      if (!byDest.has(name)) byDest.set(name, new Map());
      byDest.get(name).set(r.date, (byDest.get(name).get(r.date) || 0) + r.count);
    });
    const ranked = [...byDest].map(([name, values]) => [name, values, [...values.values()].reduce((a, b) => a + b, 0)])
      .sort((a, b) => b[2] - a[2]);
    const shown = ranked.slice(0, PALETTE.length - 1);
    const rest = ranked.slice(PALETTE.length - 1);
    const series = shown.map(([name, values], i) => ({ label: `to ${name}`, name, color: PALETTE[i], values }));
    if (rest.length) {
      const other = new Map();
      rest.forEach(([, values]) => values.forEach((v, d) => other.set(d, (other.get(d) || 0) + v)));
      series.push({ label: 'to other destinations', name: 'Other', color: MUTED, values: other });
    }
    const box = h('div', null,
      h('p', { class: 'muted', 'data-testid': 'dispatch-totals' }, `${body.totals.count} dispatches, ${body.totals.quantity} pieces.`),
      stackedDays(days, series, 'Dispatches per day by destination', 'dispatch-chart'),
      legend(series.map((s) => [s.name, s.color])),
      table([['Day'], ['Destination'], ['Dispatches', true], ['Pieces', true]],
        [...body.dispatches].reverse().map((r) => [dayLabel(r.date), r.destination || '—', r.count, r.quantity])));
    paintSwatches(box);
    return box;
  }

  // ------------------------------------------------------------ the section

  const from = h('input', { type: 'date', id: 'an-from', name: 'from', required: true, value: isoDay(monthAgo), 'data-testid': 'analytics-from' });
  const to = h('input', { type: 'date', id: 'an-to', name: 'to', required: true, value: isoDay(today), 'data-testid': 'analytics-to' });
  const show = h('div', null, h('button', { type: 'submit', class: 'btn btn-quiet btn-wide' }, 'Show'));
  show.style.alignSelf = 'end'; // level with the date fields, under their labels
  const form = h('form', { class: 'grid2', 'data-testid': 'analytics-form' },
    h('div', null, h('label', { for: 'an-from' }, 'From'), from),
    h('div', null, h('label', { for: 'an-to' }, 'To (UTC days, included)'), to),
    show);
  const reports = h('p', { 'data-testid': 'report-links' });
  const parts = {
    lead: h('p', { 'data-testid': 'lead-time' }),
    stages: h('div'),
    machines: h('div'),
    output: h('div'),
    dispatches: h('div'),
  };
  mount.append(h('h2', { id: 'analytics-title' }, 'Analytics'), form, reports,
    h('h3', null, 'Lead time, first job to dispatch'), parts.lead,
    h('h3', null, 'Time per stage'), parts.stages,
    h('h3', null, 'Time per machine'), parts.machines,
    h('h3', null, 'Output and scrap per day'), parts.output,
    h('h3', null, 'Dispatches per day and destination'), parts.dispatches);

  function renderReports(range) {
    reports.replaceChildren('Download: ', ...[['transitions', 'Transitions'], ['dispatches', 'Dispatches'], ['output', 'Operator output']]
      .flatMap(([kind, label], i) => [i ? ' · ' : '', `${label} `,
        h('a', { href: `/api/reports/${kind}.csv?${range}`, download: '' }, 'CSV'), ' ',
        h('a', { href: `/api/reports/${kind}.xlsx?${range}`, download: '' }, 'XLSX')]));
  }

  async function load() {
    const range = `from=${from.value}&to=${to.value}`;
    const [stages, lead, output, dispatches] = await Promise.all([
      api.get(`/api/analytics/stages?${range}`),
      api.get(`/api/analytics/lead-times?${range}`),
      api.get(`/api/analytics/output?${range}`),
      api.get(`/api/analytics/dispatches?${range}`),
    ]);
    const days = daysBetween(stages.from, stages.to);
    const l = lead.leadTime;
    parts.lead.textContent = l.count
      ? `Median ${T.formatDuration(l.medianSeconds)}, 90th percentile ${T.formatDuration(l.p90Seconds)}, over ${l.count} dispatch(es).`
      : 'No dispatch in this range.';
    parts.stages.replaceChildren(timeChart(stages.stages, (r) => r.stage || '(no stage)', 'Time per stage', 'stage-chart'));
    parts.machines.replaceChildren(timeChart(stages.machines, (r) => r.machineName || `#${r.machineId}`, 'Time per machine', 'machine-chart'));
    parts.output.replaceChildren(outputChart(output, days));
    parts.dispatches.replaceChildren(dispatchChart(dispatches, days));
    renderReports(range);
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (form.reportValidity()) T.guard('Could not load the analytics', load());
  });
  T.guard('Could not load the analytics', load());
})();

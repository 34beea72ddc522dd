// Webhooks page (managers): add a receiver, switch webhooks on and off, read a delivery log.
'use strict';

(function () {
  const T = window.TrackOPZ;
  const { h, api } = T;

  const TYPES = [
    ['product_moved_to_past', 'Moved to past'],
    ['product_reactivated', 'Reactivated'],
    ['product_state_updated', 'State updated'],
    ['job_started', 'Job started'],
    ['operator_update_logged', 'Output logged'],
    ['machine_status_changed', 'Machine status'],
    ['dispatchable_products_update', 'Dispatchable list changed'],
  ];
  const LABELS = new Map(TYPES);

  const form = T.byTestId('webhook-form');
  const rows = T.byTestId('webhook-rows');
  const logBox = T.byTestId('delivery-log');
  const logRows = T.byTestId('delivery-rows');
  const more = T.byTestId('deliveries-more');
  let shown = null; // {webhook, cursor} of the delivery log on screen

  /** app.css sizes inputs as fields; a checkbox sits on one line with its text. */
  function tick(name, value, text, checked) {
    const box = h('input', { type: 'checkbox', name, value, checked, 'data-testid': `type-${value}` });
    Object.assign(box.style, { width: '1.3rem', height: '1.3rem', minHeight: '0', flex: 'none', margin: '0' });
    const label = h('label', null, box, text);
    Object.assign(label.style, { display: 'flex', alignItems: 'center', gap: '.5rem', fontWeight: 'normal', margin: '.15rem 0' });
    return label;
  }

  const typesBox = T.byTestId('webhook-types');
  typesBox.append(tick('eventTypes', '*', 'Every event', true), ...TYPES.map(([v, t]) => tick('eventTypes', v, t, false)));
  typesBox.addEventListener('change', (e) => {
    if (e.target.value === '*' && e.target.checked) {
      T.$$('input[name="eventTypes"]', typesBox).forEach((b) => { if (b.value !== '*') b.checked = false; });
    } else if (e.target.checked) {
      T.$('input[value="*"]', typesBox).checked = false;
    }
  });

  const describeTypes = (types) => (types.includes('*') ? 'Every event' : types.map((t) => LABELS.get(t) || t).join(', '));

  function lastDelivery(d) {
    if (!d) return h('span', { class: 'muted' }, 'Nothing sent yet');
    const what = d.status === 'delivered' ? `Delivered (HTTP ${d.statusCode})`
      : d.status === 'failed' ? 'Failed, given up' : `Retrying (attempt ${d.attempts})`;
    return h('span', null, h('strong', null, what), ` · event ${d.eventId} · `, T.liveTime(d.lastAttemptAt || d.createdAt),
      d.lastError && d.status !== 'delivered' ? h('div', { class: 'muted' }, d.lastError) : null);
  }

  function webhookRow(w) {
    const toggle = h('button', {
      type: 'button', class: 'btn btn-quiet', 'data-testid': 'webhook-toggle',
      on: { click: () => T.guard('Could not change the webhook', setActive(w, !w.active)) },
    }, w.active ? 'Switch off' : 'Switch on');
    const log = h('button', {
      type: 'button', class: 'btn btn-quiet', 'data-testid': 'webhook-log',
      on: { click: () => T.guard('Could not load the deliveries', showLog(w)) },
    }, 'Deliveries');
    return h('tr', { 'data-testid': 'webhook-row', 'data-webhook-id': w.id },
      h('td', null, h('code', null, w.url), h('div', { class: 'muted' }, `secret ${w.secretHint}`)),
      h('td', null, describeTypes(w.eventTypes)),
      h('td', { 'data-testid': 'webhook-state' }, w.active ? 'On' : 'Off'),
      h('td', null, lastDelivery(w.lastDelivery)),
      h('td', null, toggle, ' ', log));
  }

  const load = T.latestOnly(() => api.get('/api/webhooks?limit=200'), (body) => {
    rows.replaceChildren(...body.webhooks.map(webhookRow));
    rows.removeAttribute('aria-busy');
    T.setEmpty('webhooks', body.webhooks.length === 0);
  });
  const refresh = () => T.guard('Could not load the webhooks', load());

  async function setActive(w, active) {
    await api.patch(`/api/webhooks/${w.id}`, { active });
    T.showNotice(`${w.url} is ${active ? 'on: it gets the events from now on' : 'off'}.`);
    refresh();
  }

  function deliveryRow(d) {
    return h('tr', { 'data-testid': 'delivery-row', 'data-status': d.status },
      h('td', { class: 'num' }, d.eventId),
      h('td', null, LABELS.get(d.eventType) || d.eventType),
      h('td', null, d.status),
      h('td', { class: 'num' }, d.statusCode ?? '—'),
      h('td', { class: 'num' }, d.attempts),
      h('td', null, d.lastError || ''),
      h('td', { class: 'when' }, T.formatDateTime(d.lastAttemptAt || d.createdAt)));
  }

  async function showLog(w, { append = false } = {}) {
    const cursor = append && shown ? shown.cursor : null;
    const body = await api.get(`/api/webhooks/${w.id}/deliveries?limit=50${cursor ? `&cursor=${cursor}` : ''}`);
    if (!append) logRows.replaceChildren();
    logRows.append(...body.deliveries.map(deliveryRow));
    shown = { webhook: w, cursor: body.nextCursor };
    T.$('#wh-log-title').textContent = `Deliveries to ${w.url}`;
    logBox.hidden = false;
    more.hidden = !body.nextCursor;
    T.setEmpty('deliveries', logRows.children.length === 0);
    if (!append) logBox.scrollIntoView({ block: 'nearest' });
  }
  more.addEventListener('click', () => T.guard('Could not load older deliveries', showLog(shown.webhook, { append: true })));

  T.onSubmit(form, 'Could not add the webhook', async (values, f) => {
    const types = T.$$('input[name="eventTypes"]:checked', typesBox).map((b) => b.value);
    const body = await api.post('/api/webhooks', {
      url: values.url.trim(),
      eventTypes: types.length ? types : ['*'],
      secret: values.secret.trim() || undefined,
    });
    f.reset();
    T.byTestId('new-secret').replaceChildren(h('div', { class: 'alert' },
      h('p', null, `Added ${body.webhook.url}. Its secret, shown only now: `),
      h('p', null, h('code', { 'data-testid': 'secret-value' }, body.secret))));
    refresh();
  });

  refresh();
  setInterval(() => {
    if (document.visibilityState === 'visible') refresh();
  }, 15000);
})();

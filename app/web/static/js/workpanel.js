// Workpanel: live and past products as cards, a details panel with the product's timeline and the
// operator actions. Every change (ours or anyone's) comes back over the stream and re-fetches
// what it affects.
'use strict';

(function () {
  const T = window.TrackOPZ;
  const { h, api } = T;

  const panel = T.byTestId('details-panel');
  const field = (name) => T.$(`[data-field="${name}"]`, panel);
  const form = (name) => T.$(`[data-form="${name}"]`, panel);
  const OPERATOR_KEY = 'trackopz.operator';

  const state = {
    selectedId: null, // product shown in the details panel
    lifecycle: null,
    machines: null, // loaded when the panel first opens
  };

  // ------------------------------------------------------------ tabs

  const tabs = T.$$('[role="tab"]');

  function selectTab(tab, focus) {
    for (const t of tabs) {
      const selected = t === tab;
      t.setAttribute('aria-selected', String(selected));
      t.tabIndex = selected ? 0 : -1;
      document.getElementById(t.getAttribute('aria-controls')).hidden = !selected;
    }
    if (focus) tab.focus();
  }

  for (const tab of tabs) {
    tab.addEventListener('click', () => selectTab(tab, false));
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      selectTab(tabs[(next + tabs.length) % tabs.length], true);
    });
  }

  // ------------------------------------------------------------ product lists

  function productCard(p, kind) {
    const live = kind === 'live';
    const where = [p.stage, p.process].filter(Boolean).join(' on ');
    return h('li', null,
      h('button', {
        type: 'button',
        class: `card card-${kind}`,
        'data-testid': 'product-card',
        'data-product-id': p.id,
        'aria-controls': 'details',
        'aria-current': p.id === state.selectedId ? 'true' : null,
        on: { click: () => openDetails(p.id) },
      },
      h('span', { class: 'card-title' }, p.name, ' ', h('span', { class: 'code' }, p.code)),
      h('span', { class: 'card-where' }, where || (live ? 'No stage yet' : 'Finished')),
      h('span', { class: 'card-meta' },
        live
          ? h('span', { class: 'clock' }, 'Live for ', T.liveTime(p.createdAt, 'clock'))
          : h('span', null, 'Past ', T.liveTime(p.endedAt)),
        p.quantityProduced === undefined ? null : h('span', { class: 'qty' }, h('strong', null, p.quantityProduced), ' made'))));
  }

  function renderList(kind, products) {
    const list = T.$(`[data-list="${kind}"]`);
    // A live update must not take the keyboard focus away from the card it was on.
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.productId : null;
    list.replaceChildren(...products.map((p) => productCard(p, kind)));
    const again = focused ? T.$(`[data-product-id="${focused}"]`, list) : null;
    if (again) again.focus({ preventScroll: true });
    list.removeAttribute('aria-busy');
    T.$(`[data-count="${kind}"]`).textContent = products.length;
    T.setEmpty(kind, products.length === 0);
  }

  const loadLists = T.latestOnly(
    () => Promise.all([api.get('/api/live-products/dispatchable'), api.get('/api/dashboard/status')]),
    ([live, status]) => {
      renderList('live', live.dispatchableProducts);
      renderList('past', status.dashboard.pastProducts);
    });
  const refreshLists = T.debounce(() => T.guard('Could not refresh the product lists', loadLists()), 250);

  // ------------------------------------------------------------ details panel

  function fact(label, ...value) {
    return [h('dt', null, label), h('dd', null, ...value)];
  }

  function stateBadge(s) {
    const text = s === 'ON' ? 'Live' : s === 'OFF' ? 'Past' : 'Not started';
    return h('span', { class: `badge badge-${(s || 'none').toLowerCase()}`, 'data-testid': 'details-state' }, text);
  }

  const currentJobId = (lc) => (lc.currentJob ? lc.currentJob.id : null);

  function renderDetails(lc) {
    state.lifecycle = lc;
    const current = lc.stages[lc.stages.length - 1];
    field('title').replaceChildren(lc.productName, ' ', h('span', { class: 'code' }, lc.productCode));
    const live = lc.currentState === 'ON';
    field('facts').replaceChildren(...[
      fact('State', stateBadge(lc.currentState)),
      fact('Machine', lc.currentMachine ? lc.currentMachine.name : '—'),
      fact('Stage', current ? `${current.stage || '—'} (${current.stageNumber} of ${lc.totalStages})` : '—'),
      live && current ? fact('Live for', T.liveTime(current.timestamp, 'clock')) : null,
      fact('Made in this stage', String(current ? current.quantityProduced ?? 0 : 0)),
      fact('Last change', T.liveTime(lc.lastUpdated || lc.createdAt)),
    ].filter(Boolean).flat());

    form('move-to-past').hidden = !live;
    form('log-output').hidden = !live;
    form('reactivate').hidden = lc.currentState !== 'OFF';
    field('job-label').textContent = current && live ? `(job #${current.jobId}, ${current.stage || 'stage'})` : '';

    field('stages').replaceChildren(...lc.stages.map((s) => h('tr', { class: s.state === 'ON' ? 'row-on' : null },
      h('td', null, s.stageNumber),
      h('td', null, s.stage || '—'),
      h('td', null, s.machine),
      h('td', { class: 'when' }, T.formatDateTime(s.timestamp)),
      h('td', { class: 'when' }, s.endedAt ? T.formatDateTime(s.endedAt) : (s.state === 'ON' ? 'running' : '—')),
      h('td', null, s.duration === null || s.duration === undefined
        ? (s.state === 'ON' ? T.liveTime(s.timestamp, 'clock') : '—')
        : T.formatDuration(s.duration)),
      h('td', { class: 'num' }, s.quantityProduced ?? 0))));
    if (!lc.stages.length) {
      field('stages').append(h('tr', null, h('td', { colspan: 7, class: 'muted' }, 'No stages yet.')));
    }

    const transitions = [...lc.transitions].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    field('transitions').replaceChildren(...transitions.map((t) => h('li', null,
      h('span', { class: 'timeline-when' }, T.formatDateTime(t.createdAt)),
      h('span', { class: 'timeline-what' },
        h('strong', null, `${t.fromState || '—'} → ${t.toState}`), ' ', T.describeTransition(t)))));
    if (!transitions.length) field('transitions').append(h('li', { class: 'muted' }, 'No transitions yet.'));

    for (const card of T.$$('[data-testid="product-card"]')) {
      card.setAttribute('aria-current', String(Number(card.dataset.productId) === state.selectedId));
    }
  }

  const loadDetails = T.latestOnly(
    (productId) => api.get(`/api/products/lifecycle?productId=${encodeURIComponent(productId)}`),
    (body, productId) => { if (productId === state.selectedId) renderDetails(body.lifecycle); });
  const refreshDetails = T.debounce(() => {
    if (state.selectedId !== null) T.guard('Could not refresh the product details', loadDetails(state.selectedId));
  }, 250);

  async function openDetails(productId) {
    const switching = state.selectedId !== productId;
    state.selectedId = productId;
    panel.hidden = false;
    if (switching) T.$$('form', panel).forEach(resetForm);
    T.clearError();
    try {
      await loadDetails(productId);
      field('title').focus({ preventScroll: true });
      // Side by side the panel stays in view (sticky); stacked, it is below the list: go there.
      if (getComputedStyle(panel).position !== 'sticky') panel.scrollIntoView({ block: 'start' });
      if (!state.machines) await loadMachines();
    } catch (err) {
      T.reportError('Could not load the product details', err);
    }
  }

  T.byTestId('details-close').addEventListener('click', () => {
    const id = state.selectedId;
    state.selectedId = null;
    panel.hidden = true;
    const card = T.$(`[data-testid="product-card"][data-product-id="${id}"]`);
    if (card) {
      card.setAttribute('aria-current', 'false');
      card.focus();
    }
  });

  // ------------------------------------------------------------ machines (for "start next stage")

  const refreshMachines = T.debounce(() => T.guard('Could not refresh the machines', loadMachines()), 250);

  async function loadMachines() {
    const body = await api.get('/api/machines?limit=500');
    state.machines = body.machines;
    const select = T.$('[data-testid="machine-select"]', panel);
    const chosen = select.value;
    select.replaceChildren(h('option', { value: '' }, 'Choose a machine…'),
      ...state.machines.map((m) => h('option', { value: m.id }, `${m.name} (${m.code}) — ${m.status}`)));
    select.value = chosen;
  }

  // ------------------------------------------------------------ actions

  /** Clears a form, keeping the operator: the last one typed on this tablet, else who signed in. */
  function resetForm(f) {
    f.reset();
    const operator = localStorage.getItem(OPERATOR_KEY) || document.body.dataset.user || '';
    T.$$('[data-operator]', f).forEach((input) => { input.value = operator; });
  }

  function rememberOperator(name) {
    if (name) localStorage.setItem(OPERATOR_KEY, name);
  }

  /** After our own change: show the new state before the next action can use the old one. */
  async function afterChange(message, lifecycle) {
    T.showNotice(message);
    if (lifecycle) renderDetails(lifecycle);
    else await loadDetails(state.selectedId).catch((err) => T.reportError('Saved, but the details could not be refreshed', err));
    refreshLists();
  }

  const productName = () => (state.lifecycle ? state.lifecycle.productName : 'the product');

  function lifecycleAction(action, verb) {
    T.onSubmit(form(action === 'move_to_past' ? 'move-to-past' : 'reactivate'), `Could not ${verb}`, async (values, f) => {
      const body = await api.post('/api/products/lifecycle', {
        productId: state.selectedId,
        jobId: currentJobId(state.lifecycle),
        action,
        reason: values.reason.trim() || undefined,
      });
      resetForm(f);
      await afterChange(body.message || `${productName()}: done.`, body.lifecycle);
    });
  }
  lifecycleAction('move_to_past', 'move the product to past');
  lifecycleAction('reactivate', 'reactivate the product');

  T.onSubmit(form('log-output'), 'Could not log the output', async (values, f) => {
    const jobId = currentJobId(state.lifecycle);
    const body = await api.post(`/api/jobs/${jobId}/updates`, {
      operator: values.operator.trim(),
      quantity: Number(values.quantity),
      scrapQuantity: Number(values.scrapQuantity || 0),
      note: values.note.trim() || undefined,
    });
    rememberOperator(values.operator.trim());
    resetForm(f);
    await afterChange(`Logged ${body.update.quantity} finished on ${productName()}.`);
  });

  T.onSubmit(form('start-stage'), 'Could not start the stage', async (values, f) => {
    const body = await api.post('/api/jobs', {
      productId: state.selectedId,
      machineId: Number(values.machineId),
      stage: values.stage.trim() || undefined,
      operator: values.operator.trim() || undefined,
    });
    rememberOperator(values.operator.trim());
    resetForm(f);
    const machine = (state.machines || []).find((m) => m.id === body.job.machineId);
    await afterChange(`Started ${body.job.stage || 'the next stage'} of ${productName()} on ${machine ? machine.name : 'the machine'}.`);
  });

  // ------------------------------------------------------------ live updates

  const MACHINE_EVENTS = new Set(['machine_status_changed', 'job_started']);

  T.guard('Could not load the product lists', loadLists());
  T.connectStream({
    onConnected() {
      // First connect or a reconnect: whatever happened meanwhile, show the current state.
      refreshLists();
      refreshDetails();
      if (state.machines) refreshMachines();
    },
    onEvent({ type, data = {} }) {
      if (type !== 'machine_status_changed') refreshLists();
      if (state.selectedId !== null && Number(data.productId) === state.selectedId) refreshDetails();
      if (state.machines && MACHINE_EVENTS.has(type)) refreshMachines();
    },
  });
})();

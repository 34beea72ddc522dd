// Dispatch: pick a live product, dispatch it; the list follows the stream (snapshot + deltas),
// the recent dispatches refresh when a product is dispatched anywhere.
'use strict';

(function () {
  const T = window.TrackOPZ;
  const { h, api } = T;

  const form = T.byTestId('dispatch-form');
  const select = T.byTestId('product-select');
  const info = T.byTestId('product-info');
  const quantity = T.byTestId('quantity-input');

  const products = new Map(); // id -> dispatchable item, in the server's order
  const names = new Map(); // id -> label, kept after a product leaves, for the dispatch list
  let fromStream = false; // once the stream gave a snapshot, it is the source of truth

  // ------------------------------------------------------------ the product select

  function optionText(p) {
    const where = [p.stage, p.process].filter(Boolean).join(' on ');
    return `${T.productLabel(p)}${where ? ` — ${where}` : ''} · ${p.quantityProduced ?? 0} made`;
  }

  function renderSelect() {
    const chosen = select.value;
    select.replaceChildren(
      h('option', { value: '' }, products.size ? 'Choose a product…' : 'No live products to dispatch'),
      ...Array.from(products.values(), (p) => h('option', { value: p.id }, optionText(p))));
    T.byTestId('dispatchable-count').textContent = `(${products.size} live)`;
    if (chosen && !products.has(Number(chosen))) {
      // Someone else dispatched or moved it while it was chosen: say so rather than silently clearing.
      T.showError(`${names.get(Number(chosen)) || 'The chosen product'} is no longer dispatchable: `
        + 'it was just dispatched or moved to past elsewhere. Choose another product.');
    }
    select.value = products.has(Number(chosen)) ? chosen : '';
    renderInfo();
  }

  function renderInfo() {
    const p = products.get(Number(select.value));
    info.replaceChildren();
    if (!p) return;
    info.append(`${p.stage || 'Stage'} on ${p.process || 'its machine'}, live for `,
      T.liveTime(p.createdAt, 'clock'), `, ${p.quantityProduced ?? 0} made.`);
  }

  function put(item) {
    products.set(item.id, item);
    names.set(item.id, T.productLabel(item));
  }

  function replaceAll(items) {
    products.clear();
    items.forEach(put);
    renderSelect();
  }

  select.addEventListener('change', () => {
    const p = products.get(Number(select.value));
    if (p && p.quantityProduced > 0) quantity.value = p.quantityProduced;
    renderInfo();
  });

  // ------------------------------------------------------------ recent dispatches

  function dispatchRow(d) {
    const label = names.get(d.productId) || `Product #${d.productId}`;
    return h('li', { class: 'row', 'data-testid': 'dispatch-row', 'data-product-id': d.productId },
      h('strong', { class: 'row-main' }, label),
      h('span', { class: 'row-meta' }, T.liveTime(d.createdAt)),
      h('span', { class: 'row-detail' }, `${d.quantity ?? 'All'} pcs → ${d.destination || '—'}`,
        d.dispatchedBy ? ` · by ${d.dispatchedBy}` : ''),
      d.notes ? h('span', { class: 'row-note' }, d.notes) : null);
  }

  /** Dispatch rows carry only a productId: look up the names this page has not seen yet. */
  async function fetchDispatches() {
    const body = await api.get('/api/dispatches?limit=20');
    const unknown = [...new Set(body.dispatches.map((d) => d.productId))].filter((id) => !names.has(id));
    const found = await Promise.all(unknown.map((id) => api.get(`/api/products/${id}`)));
    found.forEach(({ product }) => names.set(product.id, T.productLabel(product)));
    return body;
  }

  const loadDispatches = T.latestOnly(
    fetchDispatches,
    (body) => {
      const list = T.byTestId('recent-dispatches');
      list.replaceChildren(...body.dispatches.map(dispatchRow));
      list.removeAttribute('aria-busy');
      T.setEmpty('dispatches', body.dispatches.length === 0);
    });
  const refreshDispatches = T.debounce(() => T.guard('Could not refresh the recent dispatches', loadDispatches()), 300);

  // ------------------------------------------------------------ dispatching

  T.onSubmit(form, () => `Could not dispatch ${names.get(Number(select.value)) || 'the product'}`, async (values, f) => {
    const productId = Number(values.productId);
    const p = products.get(productId);
    const body = await api.post('/api/live-products/dispatchable', {
      productId,
      jobId: p ? p.jobId : undefined,
      quantity: values.quantity ? Number(values.quantity) : undefined,
      destination: values.destination.trim(),
      notes: values.notes.trim() || undefined,
    });
    const d = body.dispatch || {};
    products.delete(productId);
    f.reset();
    renderSelect();
    T.showNotice(`Dispatched ${names.get(productId) || 'the product'}`
      + `${d.quantity ? ` × ${d.quantity}` : ''} to ${d.destination || values.destination.trim()}.`);
    refreshDispatches();
  });

  // ------------------------------------------------------------ live updates

  T.connectStream({
    onConnected(data) {
      fromStream = true;
      replaceAll(data.dispatchableProducts);
      refreshDispatches();
    },
    onEvent({ type, data = {} }, { replayed }) {
      if (type === 'dispatchable_products_update' && !replayed) {
        // A replayed (catch-up) delta is already part of the snapshot we just applied.
        data.removed.forEach((id) => products.delete(id));
        data.added.forEach(put);
        renderSelect();
      } else if (type === 'product_moved_to_past' && data.reason === 'dispatched') {
        refreshDispatches();
      }
    },
  });

  // Until the stream's snapshot arrives (or if the stream is down), the API's list fills the select.
  T.guard('Could not load the live products', api.get('/api/live-products/dispatchable').then((body) => {
    if (!fromStream) replaceAll(body.dispatchableProducts);
  }));
  T.guard('Could not load the recent dispatches', loadDispatches());
})();

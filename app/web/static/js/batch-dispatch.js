// Batch dispatch: tick several live products, dispatch them all to one destination in one request
// (POST /api/live-products/dispatchable/batch). The list mirrors the page's product select, which
// dispatch.js keeps current from the stream, so this script holds no connection of its own.
'use strict';

(function () {
  const T = window.TrackOPZ;
  const { h, api } = T;

  const mount = T.byTestId('batch-dispatch');
  const select = T.byTestId('product-select');
  if (!mount || !select) return;

  const chosen = new Set(); // product ids ticked
  let labels = new Map(); // product id -> option text, as the select shows it

  const list = h('ul', { class: 'batch-list', 'data-testid': 'batch-list' });
  // Set through the CSSOM, which a strict style-src still allows (a style attribute it would not).
  Object.assign(list.style, { listStyle: 'none', margin: '0', padding: '0', maxHeight: '18rem', overflowY: 'auto' });
  /** A checkbox and its text on one line, as big as a fingertip (app.css sizes inputs as fields). */
  function tickRow(label, box) {
    Object.assign(label.style, { display: 'flex', alignItems: 'center', gap: '.6rem', fontWeight: 'normal', margin: '.15rem 0' });
    Object.assign(box.style, { width: '1.4rem', height: '1.4rem', minHeight: '0', flex: 'none', margin: '0' });
    return label;
  }
  const empty = h('p', { class: 'empty', 'data-testid': 'batch-empty' }, 'No live products to dispatch.');
  const count = h('span', { class: 'muted', 'data-testid': 'batch-count' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-wide', 'data-testid': 'batch-submit' }, 'Dispatch selected');
  const allBox = h('input', { type: 'checkbox', id: 'b-all', 'data-testid': 'batch-select-all' });
  const form = h('form', { 'data-testid': 'batch-form' },
    h('fieldset', null,
      h('legend', null, 'Products ', count),
      tickRow(h('label', { for: 'b-all' }, allBox, 'All live products'), allBox),
      list, empty),
    h('label', { for: 'b-destination' }, 'Destination for the selected'),
    h('input', {
      id: 'b-destination', name: 'destination', type: 'text', required: true, maxlength: 200,
      autocomplete: 'off', placeholder: 'e.g. Dock 3, Customer ACME', 'data-testid': 'batch-destination',
    }),
    h('label', { for: 'b-notes' }, 'Notes for the batch (optional)'),
    h('textarea', { id: 'b-notes', name: 'notes', rows: 2, maxlength: 2000, 'data-testid': 'batch-notes' }),
    submit);
  mount.append(h('h2', { id: 'batch-title' }, 'Dispatch several'),
    h('p', { class: 'hint' }, 'Each product is dispatched with its own quantity made; the ones that cannot be are listed, the others go.'),
    form);

  function render() {
    labels = new Map(T.$$('option', select).filter((o) => o.value).map((o) => [Number(o.value), o.textContent]));
    for (const id of [...chosen]) if (!labels.has(id)) chosen.delete(id);
    list.replaceChildren(...Array.from(labels, ([id, text]) => {
      const box = h('input', {
        type: 'checkbox', value: id, checked: chosen.has(id), 'data-testid': 'batch-item',
        on: { change: (e) => { if (e.target.checked) chosen.add(id); else chosen.delete(id); renderCount(); } },
      });
      return h('li', null, tickRow(h('label', { class: 'batch-item' }, box, text), box));
    }));
    empty.hidden = labels.size > 0;
    renderCount();
  }

  function renderCount() {
    count.textContent = `(${chosen.size} of ${labels.size} selected)`;
    submit.textContent = chosen.size ? `Dispatch ${chosen.size} selected` : 'Dispatch selected';
    allBox.checked = labels.size > 0 && chosen.size === labels.size;
    allBox.indeterminate = chosen.size > 0 && chosen.size < labels.size;
  }

  allBox.addEventListener('change', () => {
    if (allBox.checked) labels.forEach((_, id) => chosen.add(id));
    else chosen.clear();
    render();
  });

  T.onSubmit(form, 'Could not dispatch the selected products', async (values, f) => {
    if (!chosen.size) throw new Error('tick at least one product');
    const ids = [...chosen];
    const destination = values.destination.trim();
    const body = await api.post('/api/live-products/dispatchable/batch', {
      productIds: ids, destination, notes: values.notes.trim() || undefined,
    });
    const failed = body.results.filter((r) => !r.success);
    body.results.filter((r) => r.success).forEach((r) => chosen.delete(r.productId));
    if (body.succeeded) T.showNotice(`Dispatched ${body.succeeded} of ${ids.length} product(s) to ${destination}.`);
    if (failed.length) {
      T.showError(`${failed.length} product(s) were not dispatched: `
        + failed.map((r) => `${labels.get(r.productId) || `#${r.productId}`}: ${r.error}`).join(' · '));
    } else {
      f.reset();
    }
    render();
  });

  new MutationObserver(render).observe(select, { childList: true });
  render();
})();

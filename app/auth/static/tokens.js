// The managers' token page: list, create (the secret is shown once), revoke.
(function () {
  "use strict";
  const rows = document.getElementById("token-rows");
  const secret = document.getElementById("token-secret");
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content;

  async function call(method, url, body) {
    const headers = { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const response = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined,
                                         credentials: "same-origin" });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || ("The server answered " + response.status));
    return data;
  }

  function showError(message) {
    const region = document.querySelector('[data-testid="error-region"]');
    if (region) region.textContent = message;
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text == null ? "—" : text;
    return td;
  }

  async function load() {
    const response = await fetch("/api/tokens?limit=200", { credentials: "same-origin" });
    const data = await response.json();
    if (!response.ok) return showError(data.error);
    rows.replaceChildren();
    for (const t of data.tokens) {
      const tr = document.createElement("tr");
      tr.append(cell(t.name), cell(t.userName), cell(t.prefix + "…"), cell(t.createdAt),
                cell(t.lastUsedAt), cell(t.revokedAt ? "revoked" : "active"));
      const td = document.createElement("td");
      if (!t.revokedAt) {
        const button = document.createElement("button");
        button.className = "btn";
        button.textContent = "Revoke";
        button.addEventListener("click", async () => {
          try { await call("DELETE", "/api/tokens/" + t.id); await load(); }
          catch (err) { showError(err.message); }
        });
        td.append(button);
      }
      tr.append(td);
      rows.append(tr);
    }
  }

  document.getElementById("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      const data = await call("POST", "/api/tokens",
                              { userName: form.userName.value, name: form.name.value });
      secret.hidden = false;
      secret.textContent = "Copy this token now; it is not shown again: " + data.secret;
      form.reset();
      await load();
    } catch (err) { showError(err.message); }
  });

  load();
})();

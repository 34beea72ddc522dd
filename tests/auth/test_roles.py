"""Who may do what: every write endpoint × every role, reads, and pages.

Allowed gives 2xx; a role below the one needed gets 403, anonymous gets 401, and a refused write
changes no row of any table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.auth.conftest import ROLES, assert_envelope, cookie_client, csrf_of, snapshot
from tests.conftest import Factory

RANK = {None: 0, "operator": 1, "dispatcher": 2, "manager": 3}


@pytest.fixture(params=["sqlite"])
def backend(request) -> str:
    """Who may do what does not depend on the database: these (many-request) tests run on SQLite
    only; the other auth tests run on both."""
    return request.param


@dataclass
class Case:
    """One write: what it needs set up (by a manager), and the request itself."""

    name: str
    operation: tuple[str, str]  # (method, path as in the OpenAPI document)
    needs: str
    setup: Callable[[Factory], dict]
    call: Callable[[object, dict], object]


def _past_product(make: Factory) -> dict:
    product, _, job = make.live_product()
    assert make.action(product["id"], "move_to_past").status_code == 200
    return {"product": product, "job": job}


def _live(make: Factory) -> dict:
    product, machine, job = make.live_product()
    return {"product": product, "machine": machine, "job": job}


def _token(make: Factory) -> dict:
    made = make.client.post("/api/tokens", json={"userName": "boss", "name": "to-revoke"})
    assert made.status_code == 201, made.get_json()
    return {"token": made.get_json()["token"]}


def _webhook(make: Factory) -> dict:
    made = make.client.post("/api/webhooks", json={"url": "https://example.com/w"})
    assert made.status_code == 201, made.get_json()
    return {"webhook": made.get_json()["webhook"]}


def _lifecycle(action: str, **extra):
    def call(client, ctx):
        body = {"productId": ctx["product"]["id"], "action": action, **extra}
        return client.post("/api/products/lifecycle", json=body)

    return call


_n = iter(range(1, 10**6))

CASES = [
    Case(
        "create product",
        ("POST", "/api/products"),
        "manager",
        lambda make: {},
        lambda c, ctx: c.post("/api/products", json={"name": "Gear", "code": f"G-{next(_n)}"}),
    ),
    Case(
        "create machine",
        ("POST", "/api/machines"),
        "manager",
        lambda make: {},
        lambda c, ctx: c.post("/api/machines", json={"name": "Mill", "code": f"MM-{next(_n)}"}),
    ),
    Case(
        "change machine",
        ("PATCH", "/api/machines/{machine_id}"),
        "manager",
        lambda make: {"machine": make.machine()},
        lambda c, ctx: c.patch(
            f"/api/machines/{ctx['machine']['id']}", json={"status": "maintenance"}
        ),
    ),
    Case(
        "start job",
        ("POST", "/api/jobs"),
        "operator",
        lambda make: {"product": make.product(), "machine": make.machine()},
        lambda c, ctx: c.post(
            "/api/jobs",
            json={"productId": ctx["product"]["id"], "machineId": ctx["machine"]["id"]},
        ),
    ),
    Case(
        "log output",
        ("POST", "/api/jobs/{job_id}/updates"),
        "operator",
        _live,
        lambda c, ctx: c.post(
            f"/api/jobs/{ctx['job']['id']}/updates", json={"operator": "ana", "quantity": 3}
        ),
    ),
    Case(
        "dispatch",
        ("POST", "/api/live-products/dispatchable"),
        "dispatcher",
        _live,
        lambda c, ctx: c.post(
            "/api/live-products/dispatchable",
            json={"productId": ctx["product"]["id"], "quantity": 5, "destination": "Dock 2"},
        ),
    ),
    Case(
        "move to past",
        ("POST", "/api/products/lifecycle"),
        "operator",
        _live,
        _lifecycle("move_to_past", reason="scrap"),
    ),
    Case(
        "update_state OFF",
        ("POST", "/api/products/lifecycle"),
        "operator",
        _live,
        _lifecycle("update_state", newState="OFF"),
    ),
    Case(
        "reactivate",
        ("POST", "/api/products/lifecycle"),
        "dispatcher",
        _past_product,
        _lifecycle("reactivate"),
    ),
    Case(
        "update_state ON",
        ("POST", "/api/products/lifecycle"),
        "dispatcher",
        _past_product,
        _lifecycle("update_state", newState="ON"),
    ),
    Case(
        "legacy move-to-past",
        ("POST", "/api/products/move-to-past"),
        "operator",
        _live,
        lambda c, ctx: c.post(
            "/api/products/move-to-past", json={"productId": ctx["product"]["id"]}
        ),
    ),
    Case(
        "lifecycle batch",
        ("POST", "/api/products/lifecycle/batch"),
        "operator",
        _live,
        lambda c, ctx: c.post(
            "/api/products/lifecycle/batch",
            json={"actions": [{"productId": ctx["product"]["id"], "action": "move_to_past"}]},
        ),
    ),
    Case(
        "dispatch batch",
        ("POST", "/api/live-products/dispatchable/batch"),
        "dispatcher",
        _live,
        lambda c, ctx: c.post(
            "/api/live-products/dispatchable/batch",
            json={"productIds": [ctx["product"]["id"]], "destination": "Dock 2"},
        ),
    ),
    Case(
        "create webhook",
        ("POST", "/api/webhooks"),
        "manager",
        lambda make: {},
        lambda c, ctx: c.post("/api/webhooks", json={"url": "https://example.com/hook"}),
    ),
    Case(
        "change webhook",
        ("PATCH", "/api/webhooks/{webhook_id}"),
        "manager",
        lambda make: _webhook(make),
        lambda c, ctx: c.patch(
            f"/api/webhooks/{ctx['webhook']['id']}", json={"eventTypes": ["job_started"]}
        ),
    ),
    Case(
        "switch off webhook",
        ("DELETE", "/api/webhooks/{webhook_id}"),
        "manager",
        lambda make: _webhook(make),
        lambda c, ctx: c.delete(f"/api/webhooks/{ctx['webhook']['id']}"),
    ),
    Case(
        "create user",
        ("POST", "/api/users"),
        "manager",
        lambda make: {},
        lambda c, ctx: c.post(
            "/api/users",
            json={"name": f"new-{next(_n)}", "role": "operator", "password": "long enough pw"},
        ),
    ),
    Case(
        "create token",
        ("POST", "/api/tokens"),
        "manager",
        lambda make: {},
        lambda c, ctx: c.post("/api/tokens", json={"userName": "boss", "name": "script"}),
    ),
    Case(
        "revoke token",
        ("DELETE", "/api/tokens/{token_id}"),
        "manager",
        _token,
        lambda c, ctx: c.delete(f"/api/tokens/{ctx['token']['id']}"),
    ),
]

# Reads only managers may make: the users, the tokens and the webhooks.
MANAGER_READS = {
    ("GET", "/api/users"),
    ("GET", "/api/tokens"),
    ("GET", "/api/webhooks"),
    ("GET", "/api/webhooks/{webhook_id}"),
    ("GET", "/api/webhooks/{webhook_id}/deliveries"),
}
STREAM = ("GET", "/api/live-products/dispatchable/stream")  # see test_limits.py


def _operations(client) -> set[tuple[str, str]]:
    spec = client.get("/api/openapi.json").get_json()
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def test_every_write_endpoint_is_in_the_matrix(client):
    writes = {op for op in _operations(client) if op[0] != "GET"}
    assert writes == {case.operation for case in CASES}


@pytest.mark.parametrize("role", [None, *ROLES], ids=["anonymous", *ROLES])
def test_role_matrix(app, client, role_clients, role):
    """Each write, as `role`: 2xx when the role allows it, else 403 (401 anonymous), no change."""
    make = Factory(client)
    actor = role_clients[role]
    outcomes = {}
    for case in CASES:
        ctx = case.setup(make)
        before = snapshot(app)
        response = case.call(actor, ctx)
        allowed = RANK[role] >= RANK[case.needs]
        if allowed:
            assert 200 <= response.status_code < 300, (case.name, response.get_json())
            assert snapshot(app) != before, case.name
        else:
            assert_envelope(response, 401 if role is None else 403)
            assert snapshot(app) == before, f"{case.name}: a refused write changed something"
        outcomes[case.name] = response.status_code
    # The listings agree: what was refused is not there.
    products = client.get("/api/products?limit=500").get_json()["products"]
    assert any(p["name"] == "Gear" for p in products) == (role == "manager")
    assert len(outcomes) == len(CASES)


def _concrete(path: str, ids: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)


def test_every_read_needs_sign_in_and_any_role_may_read(app, client, role_clients):
    make = Factory(client)
    product, machine, job = make.live_product()
    token = _token(make)["token"]
    ids = {
        "product_id": product["id"],
        "machine_id": machine["id"],
        "job_id": job["id"],
        "token_id": token["id"],
        "webhook_id": _webhook(make)["webhook"]["id"],
        "kind": "transitions",
        "fmt": "csv",
    }
    reads = sorted(op for op in _operations(client) if op[0] == "GET" and op != STREAM)
    assert len(reads) >= 15
    for _, path in reads:
        url = _concrete(path, ids)
        if path in ("/api/products/lifecycle", "/api/products/move-to-past"):
            url += f"?productId={product['id']}"
        assert_envelope(role_clients[None].get(url), 401)
        for role in ROLES:
            response = role_clients[role].get(url)
            if ("GET", path) in MANAGER_READS and role != "manager":
                assert_envelope(response, 403)
            else:
                assert response.status_code == 200, (role, url, response.get_data(as_text=True))
    # The document of the API itself is for signed-in users too.
    assert_envelope(role_clients[None].get("/api/openapi.json"), 401)


def _page_rules(app) -> list[str]:
    skip = ("/static", "/api/", "/login", "/logout", "/healthz", "/readyz", "/metrics")
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and not rule.arguments and not rule.rule.startswith(skip)
    )


def test_pages_redirect_anonymous_users_to_login_and_render_for_signed_in_ones(app, role_clients):
    pages = [*_page_rules(app), "/api/docs"]  # the API's docs page is opened in a browser
    assert {"/", "/workpanel", "/dispatch", "/dashboard", "/tokens"} <= set(pages)
    operator = cookie_client(app, "olga", "operator")
    for page in pages:
        response = role_clients[None].get(page)
        assert response.status_code == 302, page
        location = response.headers["Location"]
        assert location.startswith("/login?next="), (page, location)
        for client in (operator, role_clients["operator"], role_clients["manager"]):
            response = client.get(page, follow_redirects=True)
            if page in ("/tokens", "/webhooks") and client is not role_clients["manager"]:
                assert response.status_code == 403  # the token and webhook pages are a manager's
            else:
                assert response.status_code == 200, page
                assert response.mimetype == "text/html"
                assert b"Sign in to the shop floor" not in response.data


@pytest.mark.parametrize("atomic", [False, True])
def test_a_batch_item_beyond_the_role_changes_nothing(app, client, role_clients, atomic):
    """An operator's batch may move products to past, not bring them back."""
    make = Factory(client)
    live = _live(make)["product"]
    past = _past_product(make)["product"]
    before = snapshot(app)
    response = role_clients["operator"].post(
        "/api/products/lifecycle/batch",
        json={
            "atomic": atomic,
            "actions": [
                {"productId": past["id"], "action": "reactivate"},
                {"productId": live["id"], "action": "update_state", "newState": "ON"},
            ],
        },
    )
    assert response.status_code == (409 if atomic else 200), response.get_json()
    assert [r["status"] for r in response.get_json()["results"]][0] == 403
    assert snapshot(app) == before


def test_login_page_and_health_checks_are_public(role_clients):
    anon = role_clients[None]
    assert anon.get("/login").status_code == 200
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/readyz").status_code in (200, 503)


def test_a_cookie_session_has_the_same_roles(app):
    """The session cookie gives its user's role, no more: an operator's forged manager write."""
    operator = cookie_client(app, "otto", "operator")
    before = snapshot(app)
    response = operator.post(
        "/api/products",
        json={"name": "Gear", "code": "G-1"},
        headers={"X-CSRF-Token": csrf_of(operator)},
    )
    assert_envelope(response, 403)
    assert snapshot(app) == before
    assert operator.get("/api/users").status_code == 403


def test_a_deactivated_user_is_refused_at_once(app, db):
    from app.models import User
    from tests.conftest import make_user

    _, token = make_user(app, "gone", "manager")
    browser = cookie_client(app, "gone-too", "manager")
    bearer = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    assert client.get("/api/me", headers=bearer).status_code == 200
    assert browser.get("/api/me").status_code == 200
    for name in ("gone", "gone-too"):
        db.session.execute(db.update(User).where(User.name == name).values(active=False))
    db.session.commit()
    assert_envelope(client.get("/api/me", headers=bearer), 401)
    assert_envelope(browser.get("/api/me"), 401)

"""Helpers of the sign-in and role tests: cookie sign-ins, role clients, a snapshot of every table."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.extensions import db as _db
from tests.conftest import authed_client, make_user

PASSWORD = "correct horse battery"
ROLES = ("operator", "dispatcher", "manager")


def csrf_of(client) -> str | None:
    """The CSRF token the pages of this client's session carry."""
    with client.session_transaction() as session:
        return session.get("csrf")


def sign_in(client, name: str, password: str = PASSWORD, *, next_url: str | None = None, **kw):
    """Sign in through the /login form, as a browser does: GET the form, POST it with its token."""
    client.get("/login")
    form = {"name": name, "password": password, "csrf_token": csrf_of(client) or ""}
    if next_url is not None:
        form["next"] = next_url
    return client.post("/login", data=form, **kw)


def cookie_client(app, name: str, role: str):
    """A test client signed in with a session cookie (the browser's way)."""
    make_user(app, name, role, password=PASSWORD)
    client = app.test_client()
    response = sign_in(client, name)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def snapshot(app) -> dict:
    """Every row of every table, to prove a refused request changed nothing.

    Left out: the idempotency keys (bookkeeping of the request itself) and a token's last-used
    time (a refused request still used its token).
    """
    out = {}
    with app.app_context():
        for table in _db.metadata.sorted_tables:
            if table.name == "idempotency_keys":
                continue
            columns = [c for c in table.columns if c.name != "last_used_at"]
            stmt = select(*columns).order_by(*table.primary_key.columns)
            out[table.name] = [tuple(row) for row in _db.session.execute(stmt)]
        _db.session.remove()
    return out


def assert_envelope(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert set(body) <= {"success", "error", "details"}
    return body


@pytest.fixture
def role_clients(app):
    """A bearer-token client per role, and an anonymous one under None."""
    clients = {role: authed_client(app, f"the-{role}", role) for role in ROLES}
    clients[None] = app.test_client()
    return clients

"""Values the database cannot hold: each was a 500 the fuzzer (test_fuzz.py) found; now a 4xx
with the envelope, on both databases (most were Postgres-only)."""

from __future__ import annotations

import base64

from sqlalchemy.exc import DataError

from app import create_app
from config import TestConfig
from tests.auth.conftest import assert_envelope, sign_in
from tests.conftest import authed_client

ID_PATHS = [
    ("GET", "/api/products/{}"),
    ("GET", "/api/machines/{}"),
    ("PATCH", "/api/machines/{}"),
    ("GET", "/api/jobs/{}"),
    ("GET", "/api/jobs/{}/updates"),
    ("POST", "/api/jobs/{}/updates"),
    ("DELETE", "/api/tokens/{}"),
]


def test_an_id_too_large_for_the_database_is_a_404(client, anon_client):
    """Ids are 32-bit INTEGER columns: Postgres refused 35184372088831, SQLite's driver
    1656486353072155038580736; both were 500s."""
    for method, path in ID_PATHS:
        for big in (2**31, 35184372088831, 2**63, 1656486353072155038580736):
            response = client.open(path.format(big), method=method, json={"quantity": 1})
            assert_envelope(response, 404)
        # Anonymous: still a 401 first, whatever the id.
        assert_envelope(anon_client.open(path.format(2**63), method=method), 401)


def test_an_id_too_large_in_a_body_a_query_or_a_cursor_is_a_400(client):
    for big in (2**31, 2**63):
        cursor = base64.urlsafe_b64encode(f"id:{big}".encode()).decode().rstrip("=")
        for response in (
            client.post("/api/jobs", json={"productId": big, "machineId": 1}),
            client.post("/api/products/lifecycle", json={"productId": big, "action": "reactivate"}),
            client.get(f"/api/jobs?productId={big}"),
            client.get(f"/api/products/lifecycle?productId={big}"),
            client.get(f"/api/products?cursor={cursor}"),
        ):
            assert_envelope(response, 400)


def test_a_nul_character_is_a_400(client):
    """Postgres cannot store a NUL: every text field refuses it before the database must."""
    for path, body in [
        ("/api/machines", {"name": "a\x00b", "code": "M-1"}),
        ("/api/products", {"name": "Gear", "code": "G\x00"}),
        ("/api/users", {"name": "a\x00", "role": "operator", "password": "long enough"}),
        ("/api/tokens", {"userName": "a\x00", "name": "x"}),
    ]:
        assert "NUL" in assert_envelope(client.post(path, json=body), 400)["error"]


def test_a_nul_in_the_sign_in_form_is_a_wrong_name(app):
    assert sign_in(app.test_client(), "ana\x00", "whatever").status_code == 401


def test_a_value_the_database_refuses_is_a_400_wherever_it_comes_from(app, database_url):
    """The net under the fields: a DataError or an overflow is the request's fault, page or API."""
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=database_url)  # (`app` migrated it)
    errors = iter([OverflowError("date value out of range"), DataError("SELECT 1", {}, None)] * 2)

    def boom():
        raise next(errors)

    app.add_url_rule("/api/boom", "api_boom", boom)
    app.add_url_rule("/boom", "page_boom", boom)
    client = authed_client(app, "boss", "manager")
    for path in ("/api/boom", "/api/boom", "/boom", "/boom"):
        response = client.get(path)
        assert response.status_code == 400
        text = response.get_data(as_text=True)
        assert "SELECT" not in text and "Traceback" not in text
        if path.startswith("/api/"):
            assert_envelope(response, 400)

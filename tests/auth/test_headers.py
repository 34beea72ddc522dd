"""Security headers on pages and CORS (off unless CORS_ORIGINS names the origin)."""

from __future__ import annotations

import re

import pytest

from app import create_app
from config import TestConfig
from tests.auth.conftest import cookie_client

PAGES = ["/login", "/workpanel", "/dispatch", "/dashboard", "/tokens", "/api/docs"]


@pytest.fixture(params=["sqlite"])
def backend(request) -> str:
    """Nothing here depends on the database: SQLite only, to keep the suite fast."""
    return request.param


def _csp(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy")
    assert policy, response.headers
    directives = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_pages_carry_the_security_headers(app):
    browser = cookie_client(app, "meera", "manager")
    for page in PAGES:
        response = browser.get(page)
        assert response.status_code == 200, page
        csp = _csp(response)
        script_src = csp.get("script-src", csp.get("default-src"))
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src, page
        assert csp["frame-ancestors"] == ["'none'"], page
        assert csp["object-src"] == ["'none'"], page
        assert response.headers["X-Content-Type-Options"] == "nosniff", page
        assert response.headers["Referrer-Policy"] in (
            "same-origin",
            "no-referrer",
            "strict-origin-when-cross-origin",
        )
        # With no inline script allowed, a page must have none, or it would not work.
        html = response.get_data(as_text=True)
        inline = [s for s in re.findall(r"<script\b[^>]*>", html) if "src=" not in s]
        assert not inline, (page, inline)
        assert not re.search(r"\son[a-z]+\s*=", html), page  # no onclick= handlers either
        assert "javascript:" not in html, page


def test_api_answers_carry_nosniff(client, anon_client):
    for response in (client.get("/api/products"), anon_client.get("/api/products")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.mimetype == "application/json"


def test_cors_is_off_by_default(client):
    response = client.get("/api/products", headers={"Origin": "https://mes.example"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options(
        "/api/products",
        headers={"Origin": "https://mes.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


@pytest.fixture
def cors_app(app, database_url):
    return create_app(
        TestConfig, SQLALCHEMY_DATABASE_URI=database_url, CORS_ORIGINS=("https://mes.example",)
    )


def test_an_allowlisted_origin_gets_the_cors_headers(cors_app):
    from tests.conftest import authed_client

    script = authed_client(cors_app, "mes", "manager")
    allowed = script.get("/api/products", headers={"Origin": "https://mes.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://mes.example"
    assert "Origin" in allowed.headers.get("Vary", "")
    other = script.get("/api/products", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Credentials" not in other.headers


def test_a_preflight_from_an_allowlisted_origin_is_answered(cors_app):
    """A browser's preflight carries no credentials: it must not be refused with a 401."""
    anon = cors_app.test_client()
    preflight = anon.options(
        "/api/products",
        headers={
            "Origin": "https://mes.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code in (200, 204), preflight.get_data(as_text=True)
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://mes.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    # ... and says nothing to anyone else, nor does it open the API to anonymous callers.
    other = anon.options(
        "/api/products",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    assert anon.get("/api/products").status_code == 401
    assert anon.options("/api/products").get_data() == b""

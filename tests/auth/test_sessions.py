"""Browser sign-in: the /login form, the session cookie, CSRF, sign-out, and who the actor is."""

from __future__ import annotations

from app import create_app
from config import TestConfig
from tests.auth.conftest import PASSWORD, assert_envelope, cookie_client, csrf_of, sign_in, snapshot
from tests.conftest import Factory, authed_client, make_user


def _session_cookie(response) -> str:
    cookies = [
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("trackopz_session=")
    ]
    assert cookies, response.headers
    return cookies[-1]


def test_sign_in_with_the_right_password(app):
    make_user(app, "ana", "operator", password=PASSWORD)
    client = app.test_client()
    assert_envelope(client.get("/api/me"), 401)
    response = sign_in(client, "ana", next_url="/dispatch")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dispatch"
    me = client.get("/api/me").get_json()
    assert me["user"]["name"] == "ana" and me["user"]["role"] == "operator"
    assert "password" not in str(me).lower()
    # The whole user, as the contract shows it, on a cookie and on a token alike.
    _, token = make_user(app, "bo", "manager")
    by_token = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).get_json()
    for body, name in ((me, "ana"), (by_token, "bo")):
        assert set(body["user"]) == {"id", "name", "role", "active", "createdAt"}, body
        assert body["user"]["name"] == name and body["user"]["active"] is True
        assert body["user"]["createdAt"].endswith("Z")


def test_sign_in_with_a_wrong_password_or_name(app):
    make_user(app, "ana", "operator", password=PASSWORD)
    for name, password in [("ana", "wrong password"), ("nobody", PASSWORD), ("Ana", PASSWORD)]:
        client = app.test_client()
        response = sign_in(client, name, password)
        assert response.status_code == 401
        assert b"Wrong name or password." in response.data
        assert_envelope(client.get("/api/me"), 401)


def test_the_sign_in_form_needs_its_token(app):
    """A login form posted from another site (no token from our form) signs nobody in."""
    make_user(app, "ana", "operator", password=PASSWORD)
    client = app.test_client()
    response = client.post("/login", data={"name": "ana", "password": PASSWORD})
    assert response.status_code == 400
    assert_envelope(client.get("/api/me"), 401)


OFFSITE = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example/",  # browsers read it as //evil.example/
    "\\\\evil.example",
    "javascript:alert(1)",
    "/\t/evil.example",  # browsers drop the tab
    "/%5C%5Cevil.example",
]


def test_sign_in_never_redirects_to_another_site(app):
    make_user(app, "ana", "operator", password=PASSWORD)
    for target in OFFSITE:
        response = sign_in(app.test_client(), "ana", next_url=target)
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location == "/" or (target.startswith("/%5C") and location == target), target


def test_the_session_cookie_is_httponly_and_samesite_lax(app):
    make_user(app, "ana", "operator", password=PASSWORD)
    cookie = _session_cookie(sign_in(app.test_client(), "ana"))
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes  # plain-HTTP development unless SESSION_COOKIE_SECURE


def test_the_session_cookie_is_secure_when_configured(database_url):
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=database_url, SESSION_COOKIE_SECURE=True)
    from tests.conftest import _empty_tables

    with app.app_context():
        _empty_tables()
    make_user(app, "ana", "operator", password=PASSWORD)
    client = app.test_client()
    cookie = _session_cookie(sign_in(client, "ana", base_url="https://localhost"))
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert {"secure", "httponly", "samesite=lax"} <= set(attributes)


def test_the_session_cookie_does_not_show_the_password_hash(app, db):
    """The cookie is signed, not encrypted: it must not carry any part of the password hash."""
    import base64
    import zlib

    from app.models import User

    make_user(app, "ana", "operator", password=PASSWORD)
    cookie = _session_cookie(sign_in(app.test_client(), "ana")).split(";")[0].split("=", 1)[1]
    payload = cookie.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if cookie.startswith("."):
        raw = zlib.decompress(raw)
    password_hash = db.session.scalar(db.select(User.password_hash).where(User.name == "ana"))
    digest = password_hash.rsplit("$", 1)[-1]
    for i in range(0, len(digest) - 8):
        assert digest[i : i + 8].encode() not in raw


def test_a_cookie_write_needs_the_csrf_token(app):
    browser = cookie_client(app, "meera", "manager")
    body = {"name": "Gear", "code": "G-1"}
    before = snapshot(app)
    assert_envelope(browser.post("/api/products", json=body), 403)
    assert_envelope(
        browser.post("/api/products", json=body, headers={"X-CSRF-Token": "x" * 43}), 403
    )
    assert snapshot(app) == before
    response = browser.post("/api/products", json=body, headers={"X-CSRF-Token": csrf_of(browser)})
    assert response.status_code == 201, response.get_json()


def test_a_bearer_token_write_needs_no_csrf_token(app):
    script = authed_client(app, "mes", "manager")
    response = script.post("/api/products", json={"name": "Gear", "code": "G-1"})
    assert response.status_code == 201


def test_a_forged_cross_site_form_post_is_refused(app):
    """Another site's page posts a form to us; the browser sends our cookie along, not our token."""
    browser = cookie_client(app, "meera", "manager")
    before = snapshot(app)
    for path in ("/api/products", "/api/users", "/api/tokens", "/logout"):
        response = browser.post(
            path,
            data={"name": "Gear", "code": "G-1", "userName": "meera", "role": "manager"},
            headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x"},
        )
        assert response.status_code == 403, path
        if path.startswith("/api/"):
            assert_envelope(response, 403)
    assert snapshot(app) == before
    assert browser.get("/api/me").status_code == 200  # and still signed in: /logout was refused


def test_sign_out_with_the_form_token(app):
    browser = cookie_client(app, "meera", "manager")
    response = browser.post("/logout", data={"csrf_token": csrf_of(browser)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert_envelope(browser.get("/api/me"), 401)
    assert browser.get("/workpanel").status_code == 302


def test_the_stream_takes_the_session_cookie(app):
    """EventSource sends the cookie: no token in the URL."""
    browser = cookie_client(app, "meera", "operator")
    response = browser.get("/api/live-products/dispatchable/stream", buffered=False)
    try:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert b"connection_established" in next(response.response)
    finally:
        response.close()


# --- the actor comes from the identity ------------------------------------------------------


def test_the_actor_of_a_transition_is_the_signed_in_user(app, client):
    make = Factory(client)
    product, _, _ = make.live_product()
    operator = authed_client(app, "ana", "operator")
    before = snapshot(app)
    forged = operator.post(
        "/api/products/lifecycle",
        json={"productId": product["id"], "action": "move_to_past", "actor": "mallory"},
    )
    assert_envelope(forged, 400)  # an `actor` in the body is refused, never used
    assert snapshot(app) == before
    done = operator.post(
        "/api/products/lifecycle", json={"productId": product["id"], "action": "move_to_past"}
    )
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["transition"]["actor"] == "ana"
    history = client.get(f"/api/products/move-to-past?productId={product['id']}").get_json()
    # Newest first: ana's move to past, and the job start of the manager who set it up.
    assert [t["actor"] for t in history["transitionHistory"]] == ["ana", "boss"]
    # The legacy endpoint and a cookie session too.
    browser = cookie_client(app, "ravi", "dispatcher")
    again = browser.post(
        "/api/products/lifecycle",
        json={"productId": product["id"], "action": "reactivate"},
        headers={"X-CSRF-Token": csrf_of(browser)},
    )
    assert again.get_json()["transition"]["actor"] == "ravi"
    legacy = browser.post(
        "/api/products/move-to-past",
        json={"productId": product["id"], "actor": "mallory"},
        headers={"X-CSRF-Token": csrf_of(browser)},
    )
    assert_envelope(legacy, 400)
    legacy = browser.post(
        "/api/products/move-to-past",
        json={"productId": product["id"]},
        headers={"X-CSRF-Token": csrf_of(browser)},
    )
    assert legacy.get_json()["transition"]["actor"] == "ravi"


def test_dispatched_by_is_the_signed_in_user(app, client):
    make = Factory(client)
    product, _, _ = make.live_product()
    dispatcher = authed_client(app, "ravi", "dispatcher")
    for forged in ({"dispatchedBy": "mallory"}, {"actor": "mallory"}, {"dispatched_by": "mallory"}):
        response = dispatcher.post(
            "/api/live-products/dispatchable", json={"productId": product["id"], **forged}
        )
        assert_envelope(response, 400)
    response = dispatcher.post(
        "/api/live-products/dispatchable", json={"productId": product["id"], "destination": "Dock"}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["dispatch"]["dispatchedBy"] == "ravi"
    assert body["transition"]["actor"] == "ravi"
    listed = client.get(f"/api/dispatches?productId={product['id']}").get_json()["dispatches"]
    assert [d["dispatchedBy"] for d in listed] == ["ravi"]

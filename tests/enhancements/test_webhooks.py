"""Webhooks: registration rules, and delivery from the event log in order, once, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from app.extensions import db as _db
from app.models import Event
from app.webhooks.deliver import deliver_pending
from tests.conftest import authed_client
from tests.support.servers import free_port

SECRET = "s3cret-s3cret-s3cret"


class Receiver:
    """A tiny HTTP server recording each POST; `fail_next` answers that many with a 500."""

    def __init__(self, port: int):
        self.port = port
        self.requests: list[tuple[dict, bytes]] = []
        self.fail_next = 0
        self.delay = 0.0
        self.server = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.requests.append((dict(self.headers), body))
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= 1 if failing else 0
                self.send_response(500 if failing else 204)
                self.end_headers()
                if failing:
                    self.wfile.write(b"receiver broke")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def ids(self) -> list[int]:
        return [int(headers["X-TrackOPZ-Event-Id"]) for headers, _ in self.requests]


@pytest.fixture
def receiver():
    r = Receiver(free_port())
    yield r
    r.stop()


@pytest.fixture
def fast(app):
    app.config.update(
        WEBHOOK_BACKOFF_SECONDS=0.01,
        WEBHOOK_BACKOFF_CAP_SECONDS=0.05,
        WEBHOOK_CONNECT_TIMEOUT=1,
        WEBHOOK_READ_TIMEOUT=2,
    )
    return app


def _register(client, url, **extra):
    response = client.post("/api/webhooks", json={"url": url, "secret": SECRET, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["webhook"]


def _events_after(app, last_id, types=None):
    with app.app_context():
        stmt = select(Event).where(Event.id > last_id).order_by(Event.id)
        if types:
            stmt = stmt.where(Event.type.in_(types))
        return [(e.id, e.type, e.payload, e.created_at) for e in _db.session.scalars(stmt)]


def _deliver_until(app, done, timeout=15.0):
    deadline = time.monotonic() + timeout
    with app.app_context():
        while not done():
            assert time.monotonic() < deadline, "deliveries did not finish in time"
            deliver_pending()
            time.sleep(0.01)


def _check_signed(headers, body):
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-TrackOPZ-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)
    assert list(message) == ["id", "type", "data", "timestamp"]
    assert str(message["id"]) == headers["X-TrackOPZ-Event-Id"]
    return message


def test_a_receiver_down_at_first_gets_every_event_once_in_order(fast, client, make, receiver):
    app = fast
    hook = _register(client, receiver.url)
    start = hook["lastEventId"]
    product, _, _ = make.live_product()
    make.action(product["id"], "move_to_past")

    with app.app_context():
        for _ in range(3):
            result = deliver_pending()
            assert result.sent == 0
            time.sleep(0.06)
    log = client.get(f"/api/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert len(log) == 1 and log[0]["status"] == "retrying" and log[0]["attempts"] >= 2
    assert log[0]["statusCode"] is None and "Connection" in log[0]["lastError"]
    first_pending = log[0]["eventId"]

    receiver.start()
    make.action(product["id"], "reactivate")
    other = make.live_product()[0]
    client.post(
        "/api/products/lifecycle/batch",
        json={
            "actions": [
                {"productId": p, "action": "move_to_past"} for p in (product["id"], other["id"])
            ]
        },
    )
    expected = _events_after(app, start)
    assert len(expected) >= 10 and expected[0][0] == first_pending
    _deliver_until(app, lambda: len(receiver.requests) >= len(expected))
    with app.app_context():
        deliver_pending()  # nothing more to send, nothing sent twice

    assert receiver.ids() == [e[0] for e in expected]
    for (headers, body), (event_id, type_, payload, _created) in zip(
        receiver.requests, expected, strict=True
    ):
        message = _check_signed(headers, body)
        assert (message["id"], message["type"], message["data"]) == (event_id, type_, payload)
        assert headers["X-TrackOPZ-Event-Type"] == type_
    assert receiver.requests[0][0]["X-TrackOPZ-Delivery-Attempt"] != "1"

    shown = client.get(f"/api/webhooks/{hook['id']}").get_json()["webhook"]
    assert shown["lastEventId"] == expected[-1][0]
    assert shown["lastDelivery"]["status"] == "delivered"
    assert shown["lastDelivery"]["statusCode"] == 204
    log = client.get(f"/api/webhooks/{hook['id']}/deliveries?limit=500").get_json()["deliveries"]
    assert sorted(d["eventId"] for d in log) == [e[0] for e in expected]
    assert {d["status"] for d in log} == {"delivered"}


def test_only_the_chosen_types_are_sent_and_errors_are_retried(fast, client, make, receiver):
    app = fast
    receiver.start()
    receiver.fail_next = 2
    hook = _register(client, receiver.url, eventTypes=["product_moved_to_past"])
    start = hook["lastEventId"]
    a = make.live_product()[0]
    b = make.live_product()[0]
    make.action(a["id"], "move_to_past")
    make.action(b["id"], "move_to_past", reason="scrap")
    expected = _events_after(app, start, types=["product_moved_to_past"])
    assert len(expected) == 2

    _deliver_until(app, lambda: len(receiver.requests) >= 4)
    with app.app_context():
        deliver_pending()
    assert receiver.ids() == [expected[0][0]] * 3 + [expected[1][0]]
    assert [json.loads(body)["type"] for _, body in receiver.requests] == [
        "product_moved_to_past"
    ] * 4
    log = client.get(f"/api/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert [(d["eventId"], d["attempts"], d["status"]) for d in log] == [
        (expected[1][0], 1, "delivered"),
        (expected[0][0], 3, "delivered"),
    ]
    # the cursor went past the other types up to the head
    head = _events_after(app, 0)[-1][0]
    assert client.get(f"/api/webhooks/{hook['id']}").get_json()["webhook"]["lastEventId"] == head
    failed = client.get(f"/api/webhooks/{hook['id']}/deliveries?status=failed").get_json()
    assert failed["deliveries"] == []


def test_an_event_is_given_up_after_the_retry_window_and_delivery_moves_on(
    fast, client, make, receiver
):
    app = fast
    app.config["WEBHOOK_RETRY_SECONDS"] = 0.3
    hook = _register(client, receiver.url, eventTypes=["product_moved_to_past"])
    a = make.live_product()[0]
    make.action(a["id"], "move_to_past")
    with app.app_context():
        deadline = time.monotonic() + 5
        while deliver_pending().gave_up == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    receiver.start()
    make.action(a["id"], "reactivate")
    make.action(a["id"], "move_to_past")
    _deliver_until(app, lambda: len(receiver.requests) >= 1)
    log = client.get(f"/api/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert [d["status"] for d in log] == ["delivered", "failed"]
    assert log[1]["attempts"] >= 2 and log[1]["lastError"]
    assert len(receiver.requests) == 1


def test_two_deliverers_at_once_never_send_an_event_twice(fast, client, make, receiver, backend):
    if backend != "postgres":
        pytest.skip("several deliverers need Postgres's advisory locks; on SQLite one runs")
    app = fast
    receiver.start()
    receiver.delay = 0.01
    hook = _register(client, receiver.url)
    for _ in range(4):
        p = make.live_product()[0]
        make.action(p["id"], "move_to_past")
    expected = [e[0] for e in _events_after(app, hook["lastEventId"])]
    errors = []

    def deliverer():
        try:
            _deliver_until(app, lambda: len(receiver.requests) >= len(expected))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=deliverer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    time.sleep(0.1)
    assert receiver.ids() == expected


def test_the_cli_runs_one_pass(fast, client, make, receiver, runner):
    receiver.start()
    _register(client, receiver.url, eventTypes=["job_started"])
    make.live_product()
    result = runner.invoke(args=["webhooks", "run", "--once"])
    assert result.exit_code == 0, result.output
    assert "Sent 1," in result.output
    assert len(receiver.requests) == 1


def test_refused_urls(app, client, monkeypatch):
    monkeypatch.setenv("PORT", "8765")
    app.config["WEBHOOK_BLOCKED_HOSTS"] = "hooks.internal, 10.0.0.5:9000"
    refused = [
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "example.com/hook",
        "http:///nohost",
        "http://user:pw@example.com/hook",
        "http://localhost/hook",  # the test client's own host
        "http://127.0.0.1:8765/api",  # this app's port on this machine
        "http://localhost:8765/",
        "http://[::1]:8765/",
        "http://0.0.0.0:8765/",
        "http://hooks.internal/x",
        "http://HOOKS.internal:8080/x",
        "http://10.0.0.5:9000/x",
        "http://example.com:99999/",
    ]
    for url in refused:
        response = client.post("/api/webhooks", json={"url": url})
        assert response.status_code == 400, (url, response.get_json())
        assert response.get_json()["success"] is False
    for url in ("http://10.0.0.5:9001/x", "https://example.com/hook", "http://127.0.0.1:8766/h"):
        assert client.post("/api/webhooks", json={"url": url}).status_code == 201, url
    hook = client.get("/api/webhooks").get_json()["webhooks"][0]
    response = client.patch(f"/api/webhooks/{hook['id']}", json={"url": "http://localhost:8765/"})
    assert response.status_code == 400


def test_webhook_api(app, client, anon_client):
    created = client.post(
        "/api/webhooks",
        json={"url": "https://example.com/a", "eventTypes": ["job_started", "product_reactivated"]},
    )
    assert created.status_code == 201
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30
    hook = body["webhook"]
    assert hook["eventTypes"] == ["product_reactivated", "job_started"]
    assert hook["active"] is True and hook["createdBy"] == "boss"
    assert hook["secretHint"] == "…" + body["secret"][-4:] and "secret" not in hook
    assert hook["lastDelivery"] is None

    assert (
        client.post(
            "/api/webhooks", json={"url": "https://x.org", "eventTypes": ["nope"]}
        ).status_code
        == 400
    )
    assert (
        client.post("/api/webhooks", json={"url": "https://x.org", "secret": "short"}).status_code
        == 400
    )
    second = client.post("/api/webhooks", json={"url": "https://example.com/b", "secret": SECRET})
    assert second.get_json()["secret"] == SECRET
    assert second.get_json()["webhook"]["eventTypes"] == ["*"]

    listed = client.get("/api/webhooks?limit=1").get_json()
    assert [w["url"] for w in listed["webhooks"]] == ["https://example.com/b"]
    assert listed["nextCursor"]
    rest = client.get(f"/api/webhooks?limit=1&cursor={listed['nextCursor']}").get_json()
    assert [w["url"] for w in rest["webhooks"]] == ["https://example.com/a"]
    assert rest["nextCursor"] is None

    patched = client.patch(
        f"/api/webhooks/{hook['id']}", json={"eventTypes": ["*"], "url": "https://example.com/c"}
    ).get_json()["webhook"]
    assert patched["eventTypes"] == ["*"] and patched["url"] == "https://example.com/c"
    off = client.delete(f"/api/webhooks/{hook['id']}")
    assert off.status_code == 200 and off.get_json()["webhook"]["active"] is False
    assert client.get(f"/api/webhooks/{hook['id']}").get_json()["webhook"]["active"] is False
    assert [w["id"] for w in client.get("/api/webhooks?active=false").get_json()["webhooks"]] == [
        hook["id"]
    ]
    on = client.patch(f"/api/webhooks/{hook['id']}", json={"active": True}).get_json()["webhook"]
    assert on["active"] is True
    assert client.get("/api/webhooks/9999").status_code == 404
    assert client.get("/api/webhooks/9999/deliveries").status_code == 404
    assert client.patch("/api/webhooks/9999", json={"active": False}).status_code == 404

    dispatcher = authed_client(app, "dora", "dispatcher")
    assert dispatcher.get("/api/webhooks").status_code == 403
    assert dispatcher.post("/api/webhooks", json={"url": "https://x.org"}).status_code == 403
    assert dispatcher.get("/webhooks").status_code == 403
    assert anon_client.get("/api/webhooks").status_code == 401
    page = client.get("/webhooks")
    assert page.status_code == 200 and b'data-testid="webhook-form"' in page.data


def test_switched_off_webhooks_get_nothing_and_restart_at_the_head(fast, client, make, receiver):
    app = fast
    receiver.start()
    hook = _register(client, receiver.url, eventTypes=["product_moved_to_past"])
    client.delete(f"/api/webhooks/{hook['id']}")
    a = make.live_product()[0]
    make.action(a["id"], "move_to_past")
    with app.app_context():
        deliver_pending()
    assert receiver.requests == []
    client.patch(f"/api/webhooks/{hook['id']}", json={"active": True})
    make.action(a["id"], "reactivate")
    make.action(a["id"], "move_to_past", reason="again")
    _deliver_until(app, lambda: len(receiver.requests) >= 1)
    assert json.loads(receiver.requests[0][1])["data"]["reason"] == "again"
    assert len(receiver.requests) == 1


def test_the_delivery_log_keeps_its_retention(fast, client, make, receiver):
    from datetime import timedelta

    from app.models import utcnow
    from app.webhooks.deliver import prune_log
    from app.webhooks.models import WebhookDelivery

    app = fast
    receiver.start()
    hook = _register(client, receiver.url, eventTypes=["job_started"])
    make.live_product()
    make.live_product()
    _deliver_until(app, lambda: len(receiver.requests) >= 2)
    with app.app_context():
        old = _db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).first()
        old.created_at = utcnow() - timedelta(days=31)
        _db.session.commit()
        assert prune_log() == 1
    log = client.get(f"/api/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert len(log) == 1


def test_a_name_resolving_to_this_machine_on_the_apps_port_is_not_sent_to(
    fast, client, make, monkeypatch
):
    import socket

    from app.webhooks.service import refusal

    app = fast
    monkeypatch.setenv("PORT", "8765")
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "sneaky.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 8765))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    hook = _register(client, "http://sneaky.example:8765/hook")  # no DNS when registering
    with app.app_context():
        assert refusal("http://sneaky.example:8765/hook", resolve=True)
        assert refusal("http://sneaky.example:8766/hook", resolve=True) is None
    make.live_product()
    with app.app_context():
        deliver_pending()
    log = client.get(f"/api/webhooks/{hook['id']}/deliveries").get_json()["deliveries"]
    assert log[0]["status"] == "retrying"
    assert log[0]["lastError"].startswith("Not sent: The URL points at TrackOPZ itself")

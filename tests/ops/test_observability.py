"""/metrics, JSON log lines, request ids and the probes, in-process (fast; no real servers)."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.observability.logs import JSONFormatter
from config import TestConfig
from tests.support.servers import ROOT, free_port


def scrape(client) -> dict[tuple, float]:
    """{(sample name, sorted label pairs): value} of one /metrics answer."""
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_endpoint_and_transitions_by_action(client, anon_client, make):
    before = scrape(anon_client)
    product, _machine, _job = make.live_product()
    assert make.action(product["id"], "move_to_past", reason="done").status_code == 200
    assert client.get(f"/api/products/{product['id']}").status_code == 200
    assert client.get("/api/nothing-here").status_code == 404
    after = scrape(anon_client)  # /metrics needs no sign-in

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    change = {"endpoint": "lifecycle.change_state", "method": "POST", "status": "200"}
    assert delta("trackopz_http_requests_total", **change) == 1
    assert delta("trackopz_http_request_duration_seconds_count", **change) == 1
    assert delta("trackopz_http_request_duration_seconds_bucket", le="+Inf", **change) == 1
    assert (
        delta(
            "trackopz_http_requests_total",
            endpoint="catalog.create_product",
            method="POST",
            status="201",
        )
        == 1
    )
    assert (
        delta("trackopz_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    )
    # The endpoint, never the raw path: no label carries an id or a URL.
    endpoints = {
        dict(labels).get("endpoint")
        for (name, labels) in after
        if name == "trackopz_http_requests_total"
    }
    assert endpoints and not any("/" in e for e in endpoints), endpoints

    assert delta("trackopz_transitions_total", action="start_job") == 1
    assert delta("trackopz_transitions_total", action="move_to_past") == 1
    assert delta("trackopz_events_committed_total", type="product_moved_to_past") == 1
    assert delta("trackopz_events_committed_total", type="job_started") == 1
    committed = sum(
        v for (n, _), v in after.items() if n == "trackopz_events_committed_total"
    ) - sum(v for (n, _), v in before.items() if n == "trackopz_events_committed_total")
    assert committed >= 4
    assert delta("trackopz_events_published_total") == committed  # all handed to the broker
    for name in (
        "trackopz_outbox_backlog",
        "trackopz_stream_clients",
        "trackopz_stream_clients_dropped_slow_total",
        "trackopz_redis_reconnects_total",
        "trackopz_events_delivered_total",
        "trackopz_db_pool_checked_out",
        "trackopz_hub_workers_unsubscribed",
    ):
        assert (name, ()) in after, name
    assert value(after, "trackopz_outbox_backlog") == 0


def test_a_rolled_back_transition_is_neither_counted_nor_logged(client, anon_client, make, caplog):
    product, _machine, _job = make.live_product()
    assert make.action(product["id"], "move_to_past").status_code == 200
    before = scrape(anon_client)
    with caplog.at_level(logging.INFO, logger="trackopz.transitions"):
        assert make.action(product["id"], "move_to_past").status_code == 409  # already past
    after = scrape(anon_client)
    assert value(after, "trackopz_transitions_total", action="move_to_past") == value(
        before, "trackopz_transitions_total", action="move_to_past"
    )
    assert not [r for r in caplog.records if r.name == "trackopz.transitions"]


def test_stream_clients_gauge_and_the_stream_logs_open_and_close(client, anon_client, caplog):
    with caplog.at_level(logging.INFO, logger="trackopz.access"):
        response = client.get("/api/live-products/dispatchable/stream", buffered=False)
        assert response.status_code == 200
        body = iter(response.response)
        assert b"connection_established" in next(body)
        assert value(scrape(anon_client), "trackopz_stream_clients") == 1
        response.close()
    assert value(scrape(anon_client), "trackopz_stream_clients") == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "trackopz.access"]
    stream_lines = [m for m in lines if "stream" in m.split(":")[0]]
    assert stream_lines[0].startswith("stream opened: GET /api/live-products/dispatchable/stream")
    assert stream_lines[1].startswith("stream closed after ")
    # No ordinary access line for the stream: its duration would be how long the page was open.
    assert not [m for m in lines if m.startswith("GET /api/live-products/dispatchable/stream")]


@pytest.fixture
def json_lines():
    """Every trackopz.* record of the test, formatted as the app writes it in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("trackopz")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def read() -> list[dict]:
        text = stream.getvalue()
        return [json.loads(line) for line in text.splitlines()]

    yield read
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_access_and_transition_lines_are_one_json_object_each(client, make, json_lines):
    product, _machine, job = make.live_product()
    r = client.post(
        "/api/products/lifecycle",
        json={"productId": product["id"], "action": "move_to_past", "reason": "scrap"},
        headers={"X-Request-ID": "req-42"},
    )
    assert r.status_code == 200
    lines = json_lines()
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)

    access = [
        line
        for line in lines
        if line["logger"] == "trackopz.access" and line.get("request_id") == "req-42"
    ]
    assert len(access) == 1, lines
    line = access[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["level"] == "INFO"
    assert line["method"] == "POST"
    assert line["path"] == "/api/products/lifecycle"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["user"] == "boss"  # flask.g.actor: the signed-in user

    [transition] = [
        line
        for line in lines
        if line["logger"] == "trackopz.transitions" and line.get("request_id") == "req-42"
    ]
    assert transition["product"] == product["id"]
    assert transition["job"] == job["id"]
    assert (transition["from"], transition["to"]) == ("ON", "OFF")
    assert transition["action"] == "move_to_past"
    assert transition["actor"] == "boss"
    assert transition["reason"] == "scrap"


def test_the_json_formatter_keeps_one_line_and_extra_fields():
    record = logging.LogRecord(
        "trackopz.x", logging.ERROR, __file__, 1, "two\nlines %s", ("here",), None
    )
    record.product = 7
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    text = JSONFormatter().format(record)
    assert "\n" not in text
    out = json.loads(text)
    assert out["message"] == "two\nlines here"
    assert out["product"] == 7
    assert out["level"] == "ERROR"
    assert "ValueError: boom" in out["exception"]


def test_the_request_id_is_echoed_or_made(anon_client):
    r = anon_client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc"})
    assert r.headers["X-Request-ID"] == "lb-1234.abc"
    made = anon_client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # Not a token we would write into logs as it is: replaced.
    odd = anon_client.get("/healthz", headers={"X-Request-ID": 'x" injected'}).headers[
        "X-Request-ID"
    ]
    assert re.fullmatch(r"[0-9a-f]{32}", odd)
    assert re.fullmatch(
        r"[0-9a-f]{32}",
        anon_client.get("/healthz", headers={"X-Request-ID": "a" * 200}).headers["X-Request-ID"],
    )
    # Errors and refusals carry one too.
    assert (
        anon_client.get("/api/products", headers={"X-Request-ID": "r-401"}).headers["X-Request-ID"]
        == "r-401"
    )


def test_probes_and_metrics_need_no_sign_in(anon_client):
    assert anon_client.get("/healthz").status_code == 200
    ready = anon_client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    body = ready.get_json()
    assert body["success"] is True and body["status"] == "ready"
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    assert ready.headers["Cache-Control"] == "no-store"
    assert anon_client.get("/metrics").status_code == 200


def test_readyz_says_when_migrations_are_behind(anon_client, monkeypatch):
    import app.health as health

    monkeypatch.setattr(health, "migration_head", lambda: "9999_not_yet")
    r = anon_client.get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["success"] is False
    assert body["checks"]["migrations"] == "behind"
    assert "flask db upgrade" in body["error"]


def test_readyz_is_503_when_the_database_is_unreachable():
    closed = free_port()  # nothing listens there
    app = create_app(
        TestConfig,
        SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/trackopz",
        REDIS_URL=None,
    )
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200  # the process itself is fine
        r = client.get("/readyz")
        assert r.status_code == 503
        body = r.get_json()
        assert body["success"] is False and body["status"] == "not ready"
        assert body["checks"]["database"] == "down"
        assert body["error"].startswith("Not ready: the database does not answer")
        assert r.headers["X-Request-ID"]
    finally:
        with app.app_context():
            from app.extensions import db

            db.engine.dispose()


def _gunicorn_conf():
    spec = importlib.util.spec_from_file_location(
        "trackopz_gunicorn_conf", ROOT / "gunicorn.conf.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_start_line_names_database_broker_workers_and_address_without_passwords(monkeypatch):
    conf = _gunicorn_conf()
    monkeypatch.setenv(
        "DATABASE_URL", "postgresql://app:s3cret@db.internal:5432/trackopz?sslmode=require"
    )
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@cache.internal:6379/0")

    class Cfg:
        bind = ["0.0.0.0:8000"]
        workers = 4
        worker_class_str = "gevent"
        worker_connections = 1000

    line = conf._describe(Cfg)
    assert "s3cret" not in line and "hunter2" not in line
    assert "postgresql://app:***@db.internal:5432/trackopz?sslmode=require" in line
    assert "Redis redis://:***@cache.internal:6379/0" in line
    assert "4 gevent worker(s)" in line
    assert "listening on http://0.0.0.0:8000" in line
    assert "password=***" in conf._redact("postgresql://h/db?password=x")

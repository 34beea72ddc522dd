"""The stream's contract, in-process through the Flask test client (SQLite and Postgres)."""

from __future__ import annotations

import json
import time

import pytest

from app.extensions import hub

STREAM = "/api/live-products/dispatchable/stream"


class Stream:
    """An open stream read chunk by chunk, parsed as the SSE spec says."""

    def __init__(self, client, path: str = STREAM, headers: dict | None = None):
        self.resp = client.get(path, headers=headers or {}, buffered=False)
        self.chunks = iter(self.resp.response)
        self.buffer = b""
        self.raw: list[bytes] = []

    def read(self) -> bytes:
        chunk = next(self.chunks)
        self.raw.append(chunk)
        self.buffer += chunk
        return chunk

    def messages(self, n: int, max_chunks: int = 50) -> list[dict]:
        """The next `n` dispatched messages: {'id', 'data', 'retry', 'event', 'lines'}."""
        out: list[dict] = []
        chunks = 0
        while len(out) < n:
            while b"\n\n" not in self.buffer:
                self.read()
                chunks += 1
                assert chunks <= max_chunks, f"only {len(out)} of {n} messages: {self.raw}"
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields: dict = {"id": None, "data": None, "retry": None, "event": None}
            lines = block.decode().split("\n")
            for line in lines:
                if line.startswith(":") or not line:
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    fields["data"] = (
                        value if fields["data"] is None else fields["data"] + "\n" + value
                    )
                elif name in fields:
                    fields[name] = value
            fields["lines"] = lines
            if fields["data"] is not None:
                fields["json"] = json.loads(fields["data"])
                out.append(fields)
        return out

    def close(self) -> None:
        self.resp.close()


def events_after(stream: Stream, n: int) -> list[tuple[int, str, dict]]:
    return [(int(m["id"]), m["json"]["type"], m["json"]["data"]) for m in stream.messages(n)]


def event_count(db) -> int:
    from sqlalchemy import func, select

    from app.models import Event

    return db.session.scalar(select(func.count()).select_from(Event))


def event_ids(db, after: int = 0) -> list[int]:
    from sqlalchemy import select

    from app.models import Event

    db.session.rollback()
    return list(db.session.scalars(select(Event.id).where(Event.id > after).order_by(Event.id)))


def test_first_message_is_retry_then_connection_established(client, make):
    make.live_product()
    make.live_product()
    stream = Stream(client)
    try:
        assert stream.resp.status_code == 200
        assert stream.resp.mimetype == "text/event-stream"
        assert stream.resp.headers["Cache-Control"] == "no-cache"
        assert stream.resp.headers["X-Accel-Buffering"] == "no"
        first = stream.read()
        assert first.startswith(b"retry: 3000\n\n")
        (hello,) = stream.messages(1)
        assert hello["id"] is None and hello["event"] is None
        assert hello["json"]["type"] == "connection_established"
        data = hello["json"]["data"]
        listed = client.get("/api/live-products/dispatchable").get_json()
        assert data["dispatchableProducts"] == listed["dispatchableProducts"]
        assert data["count"] == 2
        assert data["lastEventId"] == max(event_ids_of(client))
        assert "resync" not in data
        assert hello["json"]["timestamp"].endswith("Z")
    finally:
        stream.close()


def event_ids_of(client) -> list[int]:
    from app.extensions import db
    from app.models import Event

    with client.application.app_context():
        return list(db.session.scalars(db.select(Event.id)))


def test_events_carry_an_id_and_no_event_line(client, make):
    product, _, _ = make.live_product()
    stream = Stream(client)
    try:
        stream.messages(1)
        assert make.action(product["id"], "move_to_past", reason="done").status_code == 200
        got = stream.messages(3)
        types = [m["json"]["type"] for m in got]
        assert types == [
            "product_moved_to_past",
            "machine_status_changed",
            "dispatchable_products_update",
        ]
        ids = [int(m["id"]) for m in got]
        assert ids == sorted(ids) and len(set(ids)) == 3
        for m in got:
            assert m["event"] is None
            assert not any(line.startswith("event") for line in m["lines"])
        moved = got[0]["json"]["data"]
        for key in ("productId", "productName", "jobId", "previousState", "newState"):
            assert key in moved
        assert (moved["previousState"], moved["newState"], moved["reason"]) == ("ON", "OFF", "done")
        assert got[2]["json"]["data"] == {"added": [], "removed": [product["id"]], "count": 0}
    finally:
        stream.close()


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("source", ["window", "table"])
def test_last_event_id_replays_exactly_what_followed_then_goes_live(client, make, db, how, source):
    products = [make.live_product()[0] for _ in range(3)]
    before = event_ids(db)
    cut = before[len(before) // 2]
    for p in products:
        assert make.action(p["id"], "move_to_past").status_code == 200
    expected = event_ids(db, after=cut)
    if source == "table":
        hub.window.clear()  # a worker that started after those events: it replays from the table
    headers = {"Last-Event-ID": str(cut)} if how == "header" else {}
    path = STREAM + (f"?lastEventId={cut}" if how == "query" else "")
    stream = Stream(client, path, headers)
    try:
        (hello,) = stream.messages(1)
        assert "resync" not in hello["json"]["data"]
        assert hello["json"]["data"]["lastEventId"] == expected[-1]
        replayed = stream.messages(len(expected))
        assert [int(m["id"]) for m in replayed] == expected
        # Live from here: the next change arrives once, nothing before it comes again.
        assert make.action(products[0]["id"], "reactivate").status_code == 200
        live = stream.messages(3)
        live_ids = [int(m["id"]) for m in live]
        assert live_ids == event_ids(db, after=expected[-1])
        assert live_ids[0] > expected[-1]
    finally:
        stream.close()


def test_replay_frames_are_the_frames_sent_live(client, make, db):
    """Live, replayed from the window and replayed from the table: the same bytes."""
    product, _, _ = make.live_product()
    start = event_ids(db)[-1]
    live = Stream(client)
    try:
        live.messages(1)
        assert make.action(product["id"], "move_to_past").status_code == 200
        sent = [m["lines"] for m in live.messages(3)]
    finally:
        live.close()
    for clear in (False, True):
        if clear:
            hub.window.clear()
        again = Stream(client, headers={"Last-Event-ID": str(start)})
        try:
            again.messages(1)
            assert [m["lines"] for m in again.messages(3)] == sent
        finally:
            again.close()


def test_an_id_older_than_the_history_gets_resync(client, make, db, runner):
    product, _, _ = make.live_product()
    for action in ("move_to_past", "reactivate", "move_to_past"):
        assert make.action(product["id"], action).status_code == 200
    ids = event_ids(db)
    result = runner.invoke(args=["events", "prune", "--days", "0"])
    assert result.exit_code == 0, result.output
    assert event_ids(db) == [ids[-1]]  # the newest stays
    hub.window.clear()  # the worker's own memory of them ends too (a restart)
    stream = Stream(client, headers={"Last-Event-ID": str(ids[0])})
    try:
        (hello,) = stream.messages(1)
        data = hello["json"]["data"]
        assert data["resync"] is True
        assert data["lastEventId"] == ids[-1]
        assert data["dispatchableProducts"] == []
        # Nothing is replayed: the next message is the next live event.
        assert make.action(product["id"], "reactivate").status_code == 200
        (first,) = stream.messages(1)
        assert int(first["id"]) > ids[-1]
    finally:
        stream.close()


def test_an_id_deleted_from_the_table_gets_resync(client, make, db):
    from sqlalchemy import delete

    from app.models import Event

    product, _, _ = make.live_product()
    assert make.action(product["id"], "move_to_past").status_code == 200
    ids = event_ids(db)
    db.session.execute(delete(Event).where(Event.id < ids[-2]))
    db.session.commit()
    hub.window.clear()
    stream = Stream(client, headers={"Last-Event-ID": str(ids[0])})
    try:
        (hello,) = stream.messages(1)
        assert hello["json"]["data"]["resync"] is True
    finally:
        stream.close()
    # An id from the remaining history still replays.
    stream = Stream(client, headers={"Last-Event-ID": str(ids[-2])})
    try:
        (hello,) = stream.messages(1)
        assert "resync" not in hello["json"]["data"]
        assert [int(m["id"]) for m in stream.messages(1)] == [ids[-1]]
    finally:
        stream.close()


def test_an_id_from_the_future_gets_resync(client, make, db):
    make.live_product()
    newest = event_ids(db)[-1]
    stream = Stream(client, headers={"Last-Event-ID": str(newest + 1000)})
    try:
        (hello,) = stream.messages(1)
        assert hello["json"]["data"]["resync"] is True
        assert hello["json"]["data"]["lastEventId"] == newest
    finally:
        stream.close()


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "12abc", "9" * 40, "²", "١٢", " 1 2"])
def test_a_malformed_last_event_id_is_a_400(client, bad):
    responses = [client.get(STREAM, query_string={"lastEventId": bad})]
    if bad.isascii() or bad.encode("latin-1", "ignore").decode("latin-1") == bad:
        responses.append(client.get(STREAM, headers={"Last-Event-ID": bad}))
    for response in responses:
        assert response.status_code == 400
        body = response.get_json()
        assert body["success"] is False
        assert "Last-Event-ID" in body["error"]
    assert len(hub.clients) == 0


def test_keepalive_after_the_idle_interval(client, app):
    interval = app.config["SSE_KEEPALIVE_SECONDS"]
    stream = Stream(client)
    try:
        stream.read()
        for _ in range(2):
            started = time.monotonic()
            chunk = stream.read()
            waited = time.monotonic() - started
            assert chunk == b": keepalive\n\n"
            assert interval * 0.8 <= waited <= interval * 3
    finally:
        stream.close()
    assert len(hub.clients) == 0  # closing the stream let go of its queue


def apply_delta(items: dict[int, dict], delta: dict) -> None:
    for pid in delta["removed"]:
        items.pop(pid, None)
    for item in delta["added"]:
        items[item["id"]] = item


def test_dispatchable_deltas_on_the_snapshot_equal_the_list(client, make):
    a, m1, job_a = make.live_product()
    b, m2, _ = make.live_product()
    c = make.product()
    stream = Stream(client)
    try:
        (hello,) = stream.messages(1)
        items = {i["id"]: i for i in hello["json"]["data"]["dispatchableProducts"]}
        count = hello["json"]["data"]["count"]
        steps = [
            lambda: make.action(a["id"], "move_to_past"),
            lambda: client.post("/api/jobs", json={"productId": c["id"], "machineId": m1["id"]}),
            lambda: make.action(a["id"], "reactivate"),
            lambda: client.post(
                f"/api/jobs/{job_a['id']}/updates", json={"operator": "ana", "quantity": 5}
            ),
            lambda: client.patch(f"/api/machines/{m1['id']}", json={"name": "Lathe renamed"}),
            lambda: client.post(  # the next stage, on another machine
                "/api/jobs", json={"productId": b["id"], "machineId": m1["id"], "stage": "polish"}
            ),
            lambda: client.post("/api/live-products/dispatchable", json={"productId": c["id"]}),
            lambda: make.action(b["id"], "update_state", newState="OFF"),
            lambda: make.action(b["id"], "update_state", newState="ON"),
            lambda: client.patch(f"/api/machines/{m2['id']}", json={"status": "maintenance"}),
        ]
        for step in steps:
            response = step()
            assert response.status_code in (200, 201), response.get_json()
            while True:
                (m,) = stream.messages(1)
                if m["json"]["type"] == "dispatchable_products_update":
                    apply_delta(items, m["json"]["data"])
                    count = m["json"]["data"]["count"]
                if int(m["id"]) == event_ids_of(client)[-1]:
                    break
            listed = client.get("/api/live-products/dispatchable").get_json()
            assert sorted(items.values(), key=lambda i: i["id"]) == sorted(
                listed["dispatchableProducts"], key=lambda i: i["id"]
            )
            assert count == listed["count"] == len(items)
    finally:
        stream.close()


def test_prune_keeps_the_newest_event(runner, make, db):
    product, _, _ = make.live_product()
    make.action(product["id"], "move_to_past")
    newest = event_ids(db)[-1]
    result = runner.invoke(args=["events", "prune", "--days", "0"])
    assert result.exit_code == 0, result.output
    assert "Pruned" in result.output
    assert event_ids(db) == [newest]
    result = runner.invoke(args=["events", "prune", "--days", "0"])
    assert event_ids(db) == [newest]
    # Ids go on rising after it.
    make.action(product["id"], "reactivate")
    assert event_ids(db)[0] == newest and event_ids(db)[-1] > newest


def test_prune_keeps_what_the_retention_covers(runner, make, db):
    product, _, _ = make.live_product()
    ids = event_ids(db)
    result = runner.invoke(args=["events", "prune", "--days", "1"])
    assert result.exit_code == 0, result.output
    assert event_ids(db) == ids


def test_a_worker_at_its_stream_limit_answers_503_and_lets_the_next_in_later(client, app):
    app.config["SSE_MAX_STREAMS"] = 1
    first = Stream(client)
    try:
        first.read()
        refused = client.get(STREAM)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        assert refused.get_json()["success"] is False
        assert "live streams" in refused.get_json()["error"]
        assert len(hub.clients) == 1
    finally:
        first.close()
    second = Stream(client)  # the first one's place is free again
    try:
        assert second.messages(1)[0]["json"]["type"] == "connection_established"
    finally:
        second.close()


def test_a_head_request_gets_the_stream_headers_and_opens_no_stream(client):
    for _ in range(3):
        response = client.head(STREAM)
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.data == b""
    assert len(hub.clients) == 0  # nothing left waiting for events that nobody reads

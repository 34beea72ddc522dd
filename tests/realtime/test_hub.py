"""The hub in-process: a client that falls behind is let go, id gaps are filled from the table."""

from __future__ import annotations

from app.extensions import hub
from app.models import Event, utcnow
from app.realtime import hub as hub_module
from tests.realtime.test_stream import Stream, event_ids


def test_a_client_that_falls_behind_is_let_go_and_replays_on_reconnect(app, client, make, db):
    app.config["SSE_CLIENT_QUEUE"] = 4
    product, _, _ = make.live_product()
    dropped = hub.dropped_slow
    slow = Stream(client)
    try:
        (hello,) = slow.messages(1)
        start = hello["json"]["data"]["lastEventId"]
        for action in ("move_to_past", "reactivate"):  # 6 events, none read
            assert make.action(product["id"], action).status_code == 200
        assert hub.dropped_slow == dropped + 1
        assert len(hub.clients) == 0  # its queue is gone at once
        # What it had read stops; a reconnect from its last id gets everything.
        remaining = b"".join(slow.chunks)
        assert remaining == b""
    finally:
        slow.close()
    again = Stream(client, headers={"Last-Event-ID": str(start)})
    try:
        again.messages(1)
        assert [int(m["id"]) for m in again.messages(6)] == event_ids(db, after=start)
    finally:
        again.close()


def test_a_gap_in_ids_is_filled_from_the_table_in_order(app, client, make, db, monkeypatch):
    """Events committed but never published (a worker that died after its commit) are read
    from the table when a later event shows the gap, in batches, before that event."""
    monkeypatch.setattr(hub_module, "FILL_BATCH", 2)
    product, _, _ = make.live_product()
    fills = hub.gap_fills
    stream = Stream(client)
    try:
        stream.messages(1)
        for i in range(5):  # committed, never published
            db.session.add(
                Event(type="machine_status_changed", payload={"n": i}, created_at=utcnow())
            )
        db.session.commit()
        unpublished = event_ids(db, after=hub.last_id)
        assert make.action(product["id"], "move_to_past").status_code == 200
        got = stream.messages(len(unpublished) + 3)
        assert [int(m["id"]) for m in got] == event_ids(db, after=unpublished[0] - 1)
        assert [m["json"]["data"] for m in got[:5]] == [{"n": i} for i in range(5)]
        assert hub.gap_fills == fills + 1
    finally:
        stream.close()


def test_events_published_out_of_order_reach_clients_in_order_without_the_table(app, client, db):
    """Two writers commit 1 then 2 and publish 2 then 1 (each publishes after its own commit):
    the page gets 1 then 2, each once, with what was published, and the table is not read."""
    stream = Stream(client)
    try:
        stream.messages(1)
        for i in range(2):  # committed; published below, the second first
            db.session.add(
                Event(type="machine_status_changed", payload={"n": i}, created_at=utcnow())
            )
        db.session.commit()
        first, second = event_ids(db, after=hub.last_id)
        fills = hub.gap_fills
        hub.on_raw(b'%d|{"published":2}' % second)
        hub.on_raw(b'%d|{"published":1}' % first)
        got = stream.messages(2)
        assert [int(m["id"]) for m in got] == [first, second]
        assert [m["json"] for m in got] == [{"published": 1}, {"published": 2}]
        assert hub.gap_fills == fills
    finally:
        stream.close()


def test_repeated_and_old_ids_are_not_delivered_again(app, client, make, db):
    product, _, _ = make.live_product()
    stream = Stream(client)
    try:
        stream.messages(1)
        assert make.action(product["id"], "move_to_past").status_code == 200
        got = stream.messages(3)
        last = int(got[-1]["id"])
        # The relay's late copy of an event, and an old one, arrive on the channel.
        hub.on_raw(b"%d|{}" % last)
        hub.on_raw(b"%d|{}" % (last - 2))
        hub.on_raw(b"not-an-id|{}")
        assert hub.last_id == last
        assert make.action(product["id"], "reactivate").status_code == 200
        assert [int(m["id"]) for m in stream.messages(3)] == event_ids(db, after=last)
    finally:
        stream.close()


def test_a_client_ahead_of_this_workers_hub_resumes_without_a_resync(app, client, make, db):
    """A page that saw event N on a worker that was ahead reconnects here while this hub is
    still at N-k: it gets no resync and nothing twice, only what follows N."""
    product, _, _ = make.live_product()
    first = Stream(client)  # this worker's snapshot is now cached at the hub's last id
    try:
        first.messages(1)
    finally:
        first.close()
    for i in range(3):  # committed, not published yet: this hub has not seen them
        db.session.add(Event(type="machine_status_changed", payload={"n": i}, created_at=utcnow()))
    db.session.commit()
    seen = event_ids(db)[-1]
    again = Stream(client, headers={"Last-Event-ID": str(seen)})
    try:
        (hello,) = again.messages(1)
        assert "resync" not in hello["json"]["data"]
        assert hello["json"]["data"]["lastEventId"] == seen
        assert make.action(product["id"], "move_to_past").status_code == 200
        got = [int(m["id"]) for m in again.messages(3)]
        assert got == event_ids(db, after=seen)
    finally:
        again.close()


def _owned_pair(bound: int):
    """A Client owning one end of a socket pair with small buffers, and the peer's end."""
    import socket

    ours, peer = socket.socketpair()
    for s in (ours, peer):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.setblocking(False)
    closed: list = []
    client = hub_module.Client(bound)
    client.adopt(ours.detach(), 0, closed.append)
    return client, peer, closed


def _read_until(peer, done, seconds: float = 10) -> bytes:
    import time

    import gevent

    got = b""
    deadline = time.monotonic() + seconds
    while not done(got):
        assert time.monotonic() < deadline, f"only {len(got)} bytes"
        try:
            data = peer.recv(65536)
        except BlockingIOError:
            gevent.sleep(0.005)  # the loop runs the client's write watcher meanwhile
            continue
        if not data:
            break
        got += data
    return got


def test_an_owned_connection_gets_what_a_full_buffer_held_back_in_order_once_it_reads():
    import time

    client, peer, closed = _owned_pair(bound=1000)
    chunks = [hub_module.chunk(hub_module.frame(i, "x" * 3000)) for i in range(1, 41)]
    try:
        for i, data in enumerate(chunks, 1):  # ~120 KB: far more than the buffers hold
            assert client.push_chunk(i, data, time.monotonic())
        assert client.rest and client.backlog  # waiting, not lost
        expected = b"".join(chunks)
        assert _read_until(peer, lambda got: len(got) >= len(expected)) == expected
        assert not client.rest and not client.backlog and not client.closed
    finally:
        client.close()
        peer.close()
    assert closed == [client]


def test_an_owned_connection_that_stops_reading_is_cut_off_past_its_bound():
    client, peer, closed = _owned_pair(bound=3)
    try:
        results = [
            client.push_chunk(i, hub_module.chunk(hub_module.frame(i, "y" * 3000)), 0.0)
            for i in range(1, 30)
        ]
        assert results[-1] is False and client.closed and client.reason == "fell behind"
        assert closed == [client]
        _read_until(peer, lambda got: False)  # the connection ends: the peer reads to EOF
    finally:
        peer.close()


def test_an_owned_connection_ends_its_body_with_the_last_chunk_when_the_server_stops():
    client, peer, closed = _owned_pair(bound=10)
    try:
        client.keepalive(0.0)
        client.close("server stopping")
        assert _read_until(peer, lambda got: False) == hub_module.KEEPALIVE_CHUNK + b"0\r\n\r\n"
        assert closed == [client]
    finally:
        peer.close()


def test_an_owned_connection_whose_peer_takes_nothing_is_let_go_with_no_events_flowing(
    app, monkeypatch
):
    """A peer with a full window and no events coming is never cut off by a queue bound: the
    tender lets it go once it has taken nothing for twice the keepalive interval."""
    import time

    import gevent

    monkeypatch.setattr(hub_module, "STALLED_SECONDS", 0.0)
    app.config["SSE_KEEPALIVE_SECONDS"] = 0.2
    import socket

    from app.auth.streams import Lease

    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = hub.register()
    hub.adopt(client, ours.detach(), 0, Lease(None, None, "", shared=False))
    dropped = hub.dropped_slow
    try:
        big = hub_module.chunk(hub_module.frame(1, "z" * 1_000_000))
        assert client.push_chunk(1, big, time.monotonic()) and client.rest
        deadline = time.monotonic() + 5
        while not client.closed:
            assert time.monotonic() < deadline, "the stalled peer was never let go"
            gevent.sleep(0.05)
        assert client.reason == "fell behind"
        assert hub.dropped_slow == dropped + 1 and client not in hub.clients
    finally:
        peer.close()
        hub.stop()


def test_events_that_come_together_reach_each_owned_connection_in_one_chunk_each_once(app):
    """A commit's events (a transition's three, a group's dozen) arrive on the channel
    together: each owned stream gets them in one HTTP chunk, and a stream that already had the
    first of them (its replay covered them) gets only the rest."""
    import socket

    from app.auth.streams import Lease

    base = hub.last_id
    raws = [b'%d|{"type":"t","data":{"n":%d}}' % (base + n, n) for n in (1, 2, 3)]
    frames = [hub_module.frame(base + n, raw.partition(b"|")[2]) for n, raw in enumerate(raws, 1)]
    peers = []
    for cursor in (base, base + 2):
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        peers.append(peer)
        hub.adopt(hub.register(), ours.detach(), cursor, Lease(None, None, "", shared=False))
    try:
        hub.on_raw(*raws)
        everything = hub_module.chunk(b"".join(frames))
        assert _read_until(peers[0], lambda got: len(got) >= len(everything)) == everything
        rest = hub_module.chunk(frames[2])
        assert _read_until(peers[1], lambda got: len(got) >= len(rest)) == rest
        assert hub.last_id == base + 3
    finally:
        for peer in peers:
            peer.close()
        hub.stop()

"""GET /api/live-products/dispatchable/stream: the contract's SSE stream.

The view reads what it needs from the database (the snapshot, a replay) before it returns; the
generator then holds no session and no connection while it waits, only its hub client.
"""

from __future__ import annotations

import errno
import gc
import logging
import time
from functools import partial

from flask import Response, current_app, request
from werkzeug.exceptions import ServiceUnavailable as WorkerFull

from app.auth import streams
from app.common.blueprint import Blueprint
from app.common.schemas import iso
from app.errors import InvalidInput
from app.extensions import db, hub
from app.models import utcnow
from app.observability import STREAM_END
from app.realtime import livelist
from app.realtime.hub import KEEPALIVE

log = logging.getLogger(__name__)

# Set by gunicorn.conf.py in each worker whose gunicorn frames HTTP/1.1 bodies itself.
HAND_OVER = False

bp = Blueprint("realtime", __name__, url_prefix="/api", description="The real-time stream")


def _last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit() is True
        raise InvalidInput("Last-Event-ID must be a whole number from an earlier event.")
    return int(raw)


def _replay_from_db(after: int, upto: int) -> list[tuple[int, bytes]] | None:
    """Events (after, upto] from the table; None when history before them was pruned."""
    from sqlalchemy import func, select

    from app.models import Event
    from app.realtime.hub import frame
    from app.realtime.outbox import event_json

    oldest = db.session.scalar(select(func.min(Event.id)))
    if oldest is None or after < oldest - 1:
        return None if upto > after else []
    limit = current_app.config["SSE_REPLAY_MAX"]
    rows = db.session.execute(
        select(Event.id, Event.type, Event.payload, Event.created_at)
        .where(Event.id > after, Event.id <= upto)
        .order_by(Event.id)
        .limit(limit + 1)
    ).all()
    if len(rows) > limit:
        return None
    return [(r.id, frame(r.id, event_json(r.type, r.payload, r.created_at))) for r in rows]


def _snapshot(after: int | None) -> tuple[bytes | str, int, int]:
    """The list for a new stream, when the worker's shared one is not current: from the worker's
    kept copy at the hub's last event (livelist.py), else read from the database."""
    from app.lifecycle.service import dispatchable_snapshot

    kept = livelist.kept(current_app, db.session)
    if kept is None:
        return dispatchable_snapshot()
    return kept.snapshot(hub, dispatchable_snapshot, after)


@bp.route("/live-products/dispatchable/stream")
@bp.doc(
    summary="Server-Sent Events: every change, in id order",
    description=(
        "text/event-stream. First message: connection_established with the dispatchable "
        "list and lastEventId. Reconnect with Last-Event-ID (or ?lastEventId=) to replay."
    ),
    responses={200: {"description": "An event stream", "content": {"text/event-stream": {}}}},
)
def stream():
    """Server-Sent Events: every change, in id order."""

    after = _last_event_id()
    if request.method == "HEAD":  # the headers a GET would get; no stream is opened
        return _stream_response(())
    if len(hub.clients) >= current_app.config["SSE_MAX_STREAMS"]:
        raise WorkerFull(
            "This server holds as many live streams as it may (WORKER_CONNECTIONS); "
            "the page connects again by itself.",
            retry_after=5,
        )
    sock = request.environ.get("gunicorn.socket")
    lease = streams.acquire()  # the per-user cap on open streams: 429 past it
    try:
        client = hub.register(sock)  # first, so nothing committed from here on is missed
    except Exception:
        lease.release()
        raise
    try:
        snapshot_id, items_json, count = hub.shared_snapshot(after, partial(_snapshot, after))
        replay: list[tuple[int, bytes]] = []
        resync = False
        if after is not None:
            if after > snapshot_id:
                resync = True  # an id from another database's life
            else:
                window = hub.frames_after(after)
                replay = window if window is not None else _replay_from_db(after, snapshot_id)
                if replay is None:
                    resync, replay = True, []
        db.session.remove()
    except Exception:
        hub.unregister(client)
        lease.release()
        raise
    cursor = snapshot_id if (after is None or resync) else after
    first = (
        b'retry: %d\n\ndata: {"type":"connection_established","data":{"dispatchableProducts":%s,'
        b'"count":%d,"lastEventId":%d%s},"timestamp":"%s"}\n\n'
        % (
            current_app.config["SSE_RETRY_MS"],
            items_json,
            count,
            snapshot_id,
            b',"resync":true' if resync else b"",
            iso(utcnow()).encode(),
        )
    )
    keepalive = current_app.config["SSE_KEEPALIVE_SECONDS"]
    app = current_app._get_current_object()
    environ = request.environ
    # Past its first message a plain HTTP/1.1 stream is handed to the hub (Hub.adopt): gunicorn
    # frames a GET's HTTP/1.1 body of unknown length in chunks, and the hub goes on writing
    # chunks. Only where gunicorn.conf.py says this gunicorn speaks HTTP itself (HAND_OVER; with
    # `protocol = "uwsgi"` the proxy frames the body), and not through gunicorn's own TLS (the
    # raw socket is not the stream there).
    own = (
        HAND_OVER
        and sock is not None
        and request.method == "GET"
        and request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
        and not hasattr(sock, "getpeercert")
    )

    def generate():
        nonlocal cursor, first, replay
        handed_over = False
        try:
            chunk = [first]
            for event_id, data in replay:
                if event_id > cursor:
                    chunk.append(data)
                    cursor = event_id
            # The first message holds the whole list (tens of KB): an idle stream must not keep
            # it alive for hours in this generator's closure.
            first = replay = None
            yield b"".join(chunk)
            chunk = None
            if own and not client.closed:
                fd = sock.detach()  # gunicorn's socket object lets go; the connection stays
                hub.adopt(client, fd, cursor, lease, on_end=environ.pop(STREAM_END, None))
                lease.watch(client.sock)  # a revoked credential hangs up the hub's socket now
                handed_over = True
                raise HandedOver()
            wrote = time.monotonic()
            while not client.closed:
                items = client.take(max(0.0, wrote + keepalive - time.monotonic()))
                out = []
                for event_id, data in items:
                    if event_id > cursor:  # the replay or the snapshot already covered it
                        out.append(data)
                        cursor = event_id
                if out:
                    yield b"".join(out)
                    wrote = time.monotonic()
                elif not client.closed and time.monotonic() - wrote >= keepalive:
                    yield KEEPALIVE
                    wrote = time.monotonic()
        finally:
            if not handed_over:
                hub.unregister(client)
                # The generator runs after the request's contexts are gone; giving the lease
                # back needs the app (its Redis client).
                try:
                    with app.app_context():
                        lease.release()
                except Exception:  # noqa: BLE001 - an unreturned lease expires by itself
                    log.exception("could not give a stream lease back")

    return _stream_response(generate())


def _stream_response(body) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


class HandedOver(OSError):
    """Ends the request of a stream whose connection the hub now owns. gunicorn takes an
    ENOTCONN from the response as "the client is gone": it logs the request, writes nothing more
    and closes its socket object, which no longer holds the connection (`detach`)."""

    def __init__(self):
        super().__init__(errno.ENOTCONN, "the event stream's connection was handed to the hub")


@bp.route("/realtime/stats")
@bp.doc(
    summary="This worker's stream hub: clients, queues, last event id, greenlets",
    description=(
        "JSON about the worker that answers (each worker has its own hub): open streams (and, "
        "as `owned`, how many of them the hub holds itself past their first message), events "
        "waiting in their queues, the last event id delivered, whether the Redis subscription "
        "is up, the relay backlog, and the number of running greenlets. For operators and "
        "tests."
    ),
)
def stats():
    """This worker's stream hub: clients, queues, last event id, greenlets."""
    from gevent import Greenlet

    from app.extensions import broker

    # Greenlets spawned in this worker (requests, queued streams, loops) that still run; the
    # hubs and the threadpool's worker threads (a bounded pool, for DNS) are not counted.
    alive = sum(1 for o in gc.get_objects() if isinstance(o, Greenlet) and not o.dead)
    return {
        "success": True,
        "hub": hub.stats(),
        "broker": {
            "kind": broker.kind,
            "unpublished": len(broker.unpublished),
            "published": broker.published_total,
            "publishFailures": broker.publish_failures,
        },
        "greenlets": alive,
        "dbPool": _pool_stats(),
    }


def _pool_stats() -> dict:
    pool = db.engine.pool
    if not hasattr(pool, "checkedout"):
        return {}
    return {"size": pool.size(), "checkedOut": pool.checkedout(), "overflow": pool.overflow()}

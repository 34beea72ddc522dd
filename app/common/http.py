"""Request plumbing shared by the API: JSON-only writes, idempotent replays, ETags, paging."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from flask import Flask, Response, current_app, g, request
from sqlalchemy import Select, delete
from sqlalchemy.exc import IntegrityError
from werkzeug.routing import IntegerConverter

from app.common.schemas import MAX_ID, encode_cursor
from app.common.transactions import begin_write, reads_without_a_transaction
from app.errors import Conflict, InvalidInput
from app.extensions import db
from app.models import IdempotencyRecord, utcnow

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_api_write() -> bool:
    return request.method in WRITE_METHODS and request.path.startswith("/api/")


def require_json() -> None:
    """A write with a body must say it is JSON; one with no body at all parses as {}."""
    if not _is_api_write():
        return None
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        return None
    if not request.content_length and not request.headers.get("Transfer-Encoding"):
        return None
    from werkzeug.exceptions import UnsupportedMediaType

    raise UnsupportedMediaType()


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.full_path.encode())
    digest.update(b"\0")
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def idempotency_before() -> Response | None:
    """Replay the stored first response of a repeated Idempotency-Key."""
    key = request.headers.get("Idempotency-Key")
    if key is None or not _is_api_write():
        return None
    key = key.strip()
    if not key or len(key) > 200:
        raise InvalidInput("Idempotency-Key must be 1 to 200 characters.")
    user = g.get("user")
    key = f"{user.id if user is not None else '-'}:{key}"  # one user's key never replays another's
    fingerprint = _fingerprint()
    begin_write()
    db.session.add(IdempotencyRecord(key=key, fingerprint=fingerprint))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        record = db.session.get(IdempotencyRecord, key)
        if record is None:  # expired and pruned between the insert and the read
            raise Conflict("That Idempotency-Key is being reused; retry the request.") from None
        if record.fingerprint != fingerprint:
            raise InvalidInput(
                "That Idempotency-Key was already used for a different request."
            ) from None
        if record.status_code is None:
            raise Conflict(
                "A request with that Idempotency-Key is still being processed."
            ) from None
        response = Response(record.body, status=record.status_code, mimetype="application/json")
        response.headers["Idempotent-Replayed"] = "true"
        return response
    g.idempotency_key = key
    return None


def idempotency_after(response: Response) -> Response:
    """Keep the first answer to a keyed write; forget the key if the server failed."""
    key = g.pop("idempotency_key", None)
    if key is None:
        return response
    begin_write()
    record = db.session.get(IdempotencyRecord, key)
    if record is not None:
        if response.status_code >= 500:
            db.session.delete(record)
        else:
            record.status_code = response.status_code
            record.body = response.get_data(as_text=True)
        db.session.commit()
    return response


def prune_idempotency_keys() -> int:
    cutoff = utcnow() - timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
    result = db.session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)
    )
    db.session.commit()
    return result.rowcount or 0


def not_modified(etag: str) -> Response | None:
    """A 304 when the client's If-None-Match names the current ETag.

    Compared weakly, as RFC 9110 says for If-None-Match: a proxy that compresses the body (nginx
    with gzip) hands the client W/"..." and the client sends that back.
    """
    if request.if_none_match.contains_weak(etag):
        response = Response(status=304)
        response.set_etag(etag)
        return response
    return None


T = TypeVar("T")
SHARED_ANSWERS = "trackopz_shared_answers"  # app.extensions: name -> _Latest


class _Latest:
    """The newest answer built: (the ETag it was built for, the answer, when its build began)."""

    __slots__ = ("lock", "entry")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # gevent's, in a gevent worker: it blocks a greenlet only
        self.entry: tuple[str, object, float] | None = None


def shared_slot(app: Flask, name: str, make: Callable[[], T]) -> T:
    """This worker's shared object `name` (made by `make()` on first use): the answers shared
    between requests, dropped together where the data under them goes (tests, a restore)."""
    slots = app.extensions.setdefault(SHARED_ANSWERS, {})
    return slots.get(name) or slots.setdefault(name, make())


def shared_for_etag(name: str, etag: str, build: Callable[[], T]) -> T:
    """`build()`'s answer for `etag`, read from the database just before: built once and shared
    by this worker's requests while the ETag stays the same.

    An ETag here names the state an answer depends on (the last event's id, and what changes
    without an event): the same ETag, the same answer, which is what a 304 already relies on.
    After an event every open workpanel and dashboard asks again within a few hundred
    milliseconds; they now wait for one build per worker instead of each making its own.

    One build at a time per answer. A request that waited takes the answer of a build that
    began after it asked, whatever ETag that one was for: it was read later than this
    request's ETag, so it is as new or newer. So while events come faster than a build takes,
    each build serves everyone who asked before it began, and builds never queue up behind each
    other. Only the newest answer is kept.
    """
    asked = time.monotonic()
    slot = shared_slot(current_app, name, _Latest)
    entry = slot.entry
    if entry is not None and entry[0] == etag:
        return entry[1]
    with slot.lock:
        entry = slot.entry
        if entry is None or (entry[0] != etag and entry[2] < asked):
            began = time.monotonic()
            entry = slot.entry = (etag, build(), began)
        return entry[1]


def with_etag(body: dict | str | bytes, etag: str) -> Response:
    """A JSON answer with its ETag; `body` may already be JSON text (built by the database)."""
    from flask import jsonify

    if isinstance(body, (str, bytes)):
        response = Response(body, mimetype="application/json")
    else:
        response = jsonify(body)
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    return response


def page(stmt: Select, id_column, *, limit: int, cursor: int | None) -> tuple[list, str | None]:
    """Newest first, keyset-paged on id: stable under inserts, no OFFSET scans."""
    if cursor is not None:
        stmt = stmt.where(id_column < cursor)
    rows = db.session.scalars(stmt.order_by(id_column.desc()).limit(limit + 1)).all()
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


class IdConverter(IntegerConverter):
    """`<int:...>` in a path, bounded to what the database can hold: a larger id is a 404, not an
    overflow in the driver and a 500. (A 404 raised here, rather than a failed match, which
    werkzeug would answer with a 405 when a rule with the same path has other methods.)"""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("min", 1)  # what the OpenAPI document says; to_python enforces it
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)

    def to_python(self, value: str) -> int:
        from werkzeug.exceptions import NotFound

        if len(value) > len(str(MAX_ID)):  # and int() refuses a string of 4,301 digits or more
            raise NotFound()
        number = int(value)
        if not self.min <= number <= self.max:
            raise NotFound()
        return number


def register_request_hooks(app: Flask) -> None:
    # Before any blueprint adds its rules: a rule takes its converter when it is added.
    app.url_map.converters["int"] = IdConverter
    app.before_request(require_json)
    app.before_request(reads_without_a_transaction)
    app.before_request(idempotency_before)
    app.after_request(idempotency_after)

"""The deliverer: sends each webhook the committed events of its types, in event order.

It reads the event log (the outbox's table), where ids become visible in id order, so a
per-webhook cursor (the last event id handled) is all it needs to resume: nothing is skipped,
nothing is sent twice after it was delivered. One event at a time per webhook:

- a 2xx answer: delivered, the cursor moves on;
- anything else (an error status, a redirect, a timeout, a refused connection): the attempt is
  logged and retried after an exponential backoff (WEBHOOK_BACKOFF_SECONDS doubling, capped at
  WEBHOOK_BACKOFF_CAP_SECONDS); later events wait behind it, since order is kept; once the event
  is WEBHOOK_RETRY_SECONDS (24 h) old a failed attempt marks it failed and the cursor moves on.

Several deliverers may run (one per host, say): on Postgres each event is sent inside a
transaction holding a per-webhook advisory lock (`pg_try_advisory_xact_lock`), and a deliverer
that finds the lock taken skips that webhook for now, so no event is ever being sent twice at
once. The transaction writes the delivery log and the cursor and only then releases the lock. On
SQLite (one host) no transaction stays open during the HTTP call, and `flask webhooks run` takes
a file lock so that only one deliverer runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests
from flask import current_app
from sqlalchemy import func, select, text, update

from app.common.schemas import iso
from app.common.transactions import begin_write
from app.extensions import db
from app.models import Event, utcnow
from app.webhooks.models import Webhook, WebhookDelivery
from app.webhooks.service import refusal

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x77686B73  # "whks": pg_try_advisory_xact_lock(LOCK_NAMESPACE, webhook id)
USER_AGENT = "TrackOPZ-Webhooks/1.0"
MAX_RESPONSE_READ = 1024  # bytes of a receiver's answer read (for the log), no more

SENT, FAILED, GAVE_UP, WAITING, IDLE, BUSY = (
    "sent",
    "failed",
    "gave_up",
    "waiting",
    "idle",
    "busy",
)


@dataclass
class PassResult:
    """What one pass over the webhooks did; `wake_at` is the earliest retry it is waiting for."""

    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    wake_at: datetime | None = None
    outcomes: list[str] = field(default_factory=list)

    @property
    def worked(self) -> bool:
        return bool(self.sent or self.failed or self.gave_up)


def sign(secret: str, body: bytes) -> str:
    """The X-TrackOPZ-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def event_body(event: Event) -> bytes:
    return json.dumps(
        {
            "id": event.id,
            "type": event.type,
            "data": event.payload,
            "timestamp": iso(event.created_at),
        },
        separators=(",", ":"),
        default=str,
    ).encode()


def backoff(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: doubling, capped."""
    base = float(current_app.config["WEBHOOK_BACKOFF_SECONDS"])
    cap = float(current_app.config["WEBHOOK_BACKOFF_CAP_SECONDS"])
    return min(cap, base * 2 ** min(max(attempts - 1, 0), 30))


def new_http() -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # no proxy or .netrc from the environment: only the registered URL
    http.headers["User-Agent"] = USER_AGENT
    return http


def deliver_pending(http: requests.Session | None = None, *, per_webhook: int = 100) -> PassResult:
    """One pass: for each active webhook, send what is due, up to `per_webhook` events."""
    http = http or new_http()
    result = PassResult()
    db.session.rollback()
    ids = db.session.scalars(select(Webhook.id).where(Webhook.active).order_by(Webhook.id)).all()
    db.session.rollback()
    for webhook_id in ids:
        for _ in range(per_webhook):
            outcome, wake_at = deliver_next(webhook_id, http)
            result.outcomes.append(outcome)
            if outcome == SENT:
                result.sent += 1
            elif outcome == GAVE_UP:
                result.gave_up += 1
            elif outcome == FAILED:
                result.failed += 1
            if wake_at is not None and (result.wake_at is None or wake_at < result.wake_at):
                result.wake_at = wake_at
            if outcome not in (SENT, GAVE_UP):
                break  # a failure waits for its backoff; idle, waiting or busy: next webhook
    return result


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _next_event(webhook: Webhook) -> tuple[Event | None, int]:
    """The first event after the cursor of the webhook's types, and the head it looked up to.

    The head is read first: any event committed after that read has a greater id, so moving the
    cursor to the head when nothing matched can never skip one.
    """
    head = db.session.scalar(select(func.coalesce(func.max(Event.id), 0)))
    stmt = select(Event).where(Event.id > webhook.last_event_id, Event.id <= head)
    if webhook.event_types is not None:
        stmt = stmt.where(Event.type.in_(webhook.event_types))
    return db.session.scalars(stmt.order_by(Event.id).limit(1)).first(), head


def deliver_next(webhook_id: int, http: requests.Session) -> tuple[str, datetime | None]:
    """Send one webhook its next due event, if any; returns (outcome, when to try again)."""
    postgres = _is_postgres()
    db.session.rollback()
    if postgres:
        got = db.session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:ns, :id)"),
            {"ns": LOCK_NAMESPACE, "id": webhook_id},
        )
        if not got:
            db.session.rollback()
            return BUSY, None
    try:
        return _deliver_next(webhook_id, http, postgres)
    except Exception:
        db.session.rollback()
        raise


def _deliver_next(webhook_id: int, http, postgres: bool) -> tuple[str, datetime | None]:
    webhook = db.session.get(Webhook, webhook_id, populate_existing=True)
    if webhook is None or not webhook.active:
        db.session.rollback()
        return IDLE, None
    event, head = _next_event(webhook)
    if event is None:
        if head > webhook.last_event_id:
            _advance(webhook_id, head)  # nothing of its types up to the head
            db.session.commit()
        else:
            db.session.rollback()
        return IDLE, None
    delivery = db.session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.event_id == event.id
        )
    ).first()
    now = utcnow()
    if delivery is not None and delivery.next_attempt_at and delivery.next_attempt_at > now:
        db.session.rollback()
        return WAITING, delivery.next_attempt_at

    url, secret, event_id, event_type = webhook.url, webhook.secret, event.id, event.type
    event_time, body = event.created_at, event_body(event)
    attempt = (delivery.attempts if delivery is not None else 0) + 1
    if not postgres:
        db.session.rollback()  # SQLite: hold no read snapshot while waiting on the receiver
    status_code, error = _post(http, url, secret, body, event_id, event_type, attempt)

    if not postgres:
        begin_write()
        webhook = db.session.get(Webhook, webhook_id, populate_existing=True)
        if webhook is None or webhook.last_event_id >= event_id:
            db.session.rollback()  # handled meanwhile (another deliverer, despite the file lock)
            return IDLE, None
        delivery = db.session.scalars(
            select(WebhookDelivery).where(
                WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.event_id == event_id
            )
        ).first()
    done = utcnow()
    if delivery is None:
        delivery = WebhookDelivery(
            webhook_id=webhook_id,
            event_id=event_id,
            event_type=event_type,
            status="retrying",
            attempts=0,
            created_at=done,
        )
        db.session.add(delivery)
    delivery.attempts += 1
    delivery.status_code = status_code
    delivery.last_attempt_at = done
    wake_at = None
    if error is None:
        outcome = SENT
        delivery.status, delivery.last_error = "delivered", None
        delivery.delivered_at, delivery.next_attempt_at = done, None
        _advance(webhook_id, event_id)
    else:
        delivery.last_error = error[:500]
        retry_until = event_time + timedelta(seconds=current_app.config["WEBHOOK_RETRY_SECONDS"])
        if done >= retry_until:
            outcome = GAVE_UP
            delivery.status, delivery.next_attempt_at = "failed", None
            _advance(webhook_id, event_id)
            log.warning(
                "webhook %s: gave up on event %s after %s attempt(s): %s",
                webhook_id,
                event_id,
                delivery.attempts,
                error,
            )
        else:
            outcome = FAILED
            wake_at = min(done + timedelta(seconds=backoff(delivery.attempts)), retry_until)
            delivery.status, delivery.next_attempt_at = "retrying", wake_at
            log.info(
                "webhook %s: event %s, attempt %s failed (%s); next try in %.1f s",
                webhook_id,
                event_id,
                delivery.attempts,
                error,
                (wake_at - done).total_seconds(),
            )
    db.session.commit()
    return outcome, wake_at


def _advance(webhook_id: int, event_id: int) -> None:
    """Move the cursor forward, never back: switched off and on again meanwhile, the webhook
    starts at the head of that moment, which an older delivery must not undo."""
    db.session.execute(
        update(Webhook)
        .where(Webhook.id == webhook_id, Webhook.last_event_id < event_id)
        .values(last_event_id=event_id)
    )


def _post(http, url, secret, body, event_id, event_type, attempt) -> tuple[int | None, str | None]:
    """POST one event; (status code, None) on a 2xx, else (status code or None, what went wrong)."""
    reason = refusal(url, resolve=True)  # settings or DNS may have changed since it was added
    if reason:
        return None, f"Not sent: {reason}"
    headers = {
        "Content-Type": "application/json",
        "X-TrackOPZ-Event-Id": str(event_id),
        "X-TrackOPZ-Event-Type": event_type,
        "X-TrackOPZ-Delivery-Attempt": str(attempt),
        "X-TrackOPZ-Signature": sign(secret, body),
    }
    timeout = (
        float(current_app.config["WEBHOOK_CONNECT_TIMEOUT"]),
        float(current_app.config["WEBHOOK_READ_TIMEOUT"]),
    )
    try:
        with http.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            code = response.status_code
            if 200 <= code < 300:
                return code, None
            snippet = next(response.iter_content(MAX_RESPONSE_READ), b"")
    except requests.RequestException as err:
        return None, _describe(err)
    text_ = snippet.decode("utf-8", "replace").strip().replace("\n", " ")
    return code, f"HTTP {code}" + (f": {text_[:200]}" if text_ else "")


def _describe(err: requests.RequestException) -> str:
    """'ConnectionError: Failed to establish a new connection: [Errno 111] Connection refused',
    without urllib3's pool and retry wrappers around it."""
    inner = err.args[0] if err.args else err
    inner = getattr(inner, "reason", None) or inner
    return f"{type(err).__name__}: {str(inner).split('): ', 1)[-1]}"


def prune_log() -> int:
    """Drop finished delivery rows older than WEBHOOK_LOG_RETENTION_DAYS."""
    cutoff = utcnow() - timedelta(days=current_app.config["WEBHOOK_LOG_RETENTION_DAYS"])
    db.session.rollback()
    removed = db.session.execute(
        WebhookDelivery.__table__.delete().where(
            WebhookDelivery.created_at < cutoff, WebhookDelivery.status != "retrying"
        )
    ).rowcount
    db.session.commit()
    return removed or 0

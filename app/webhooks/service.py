"""Webhooks: registering receivers, and the rules their URLs must follow."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from functools import cache
from urllib.parse import urlsplit

from flask import current_app, has_request_context, request
from sqlalchemy import func, select

from app.common.schemas import iso
from app.errors import InvalidInput, NotFound
from app.extensions import db
from app.models import Event, utcnow
from app.webhooks.models import Webhook, WebhookDelivery

# The stream's event types (API.md, "The real-time stream"); connection_established is per
# connection, never in the event log, so never sent.
EVENT_TYPES = (
    "product_moved_to_past",
    "product_reactivated",
    "product_state_updated",
    "job_started",
    "operator_update_logged",
    "machine_status_changed",
    "dispatchable_products_update",
)
ALL = "*"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


# --- which URLs may receive -------------------------------------------------------------------


def _split_host_port(entry: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]:port' or a URL -> (lower-case host, port or None)."""
    entry = entry.strip()
    parts = urlsplit(entry if "//" in entry else "//" + entry)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower().rstrip("."), port


@cache
def _own_names_and_addresses() -> frozenset[str]:
    """This machine's names and addresses, looked up once (a reverse lookup may be slow)."""
    found = {socket.gethostname().lower()}
    try:
        name, aliases, addresses = socket.gethostbyname_ex(socket.gethostname())
        found.update(n.lower() for n in (name, *aliases))
        found.update(addresses)
    except OSError:
        pass
    return frozenset(found)


def _is_this_machine(host: str) -> bool:
    """Loopback, the unspecified address, or this machine's own name or address."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    if host in _own_names_and_addresses():
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _resolves_to_this_machine(host: str, port: int) -> bool:
    """Whether a name (say 127.0.0.1.nip.io) resolves to one of this machine's addresses."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False  # unresolvable: the delivery fails and says so
    return any(_is_this_machine(info[4][0].split("%")[0]) for info in infos)


def _app_ports() -> set[int]:
    """The ports this app listens on (gunicorn.conf.py reads BIND, else PORT)."""
    ports = set()
    for entry in (os.environ.get("BIND") or "").split(","):
        _, port = _split_host_port(entry)
        if port:
            ports.add(port)
    try:
        ports.add(int(os.environ.get("PORT") or 8000))
    except ValueError:
        pass
    return ports


def blocked_addresses() -> list[tuple[str, int | None]]:
    """(host, port or None for any port) pairs a webhook may not point at: the app itself."""
    blocked = [
        _split_host_port(entry)
        for entry in (current_app.config.get("WEBHOOK_BLOCKED_HOSTS") or "").split(",")
        if entry.strip()
    ]
    if current_app.config.get("SERVER_NAME"):
        blocked.append(_split_host_port(current_app.config["SERVER_NAME"]))
    if has_request_context() and request.host:
        host, port = _split_host_port(request.host)
        blocked.append((host, port or (443 if request.scheme == "https" else 80)))
    return blocked


def refusal(url: str, *, resolve: bool = False) -> str | None:
    """Why `url` may not receive webhooks, or None when it may.

    With `resolve` (the deliverer, before each request) a name is looked up too, so that one
    resolving to this machine on the app's port is refused as well; registering does not wait
    on DNS.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "The URL is not valid."
    if parts.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "The URL has no host."
    if parts.username is not None or parts.password is not None:
        return "Put no user name or password in the URL; receivers check the signature instead."
    port = port or (443 if parts.scheme == "https" else 80)
    itself = "The URL points at TrackOPZ itself; a webhook must go to another service."
    for blocked_host, blocked_port in blocked_addresses():
        if host == blocked_host and blocked_port in (None, port):
            return itself
    if port in _app_ports() and (
        _is_this_machine(host) or (resolve and _resolves_to_this_machine(host, port))
    ):
        return itself
    return None


def _check_url(url: str) -> str:
    url = url.strip()
    reason = refusal(url)
    if reason:
        raise InvalidInput(reason)
    return url


def _types(event_types: list[str] | None) -> list[str] | None:
    """['*'] (or nothing) is every type, stored as None; else the distinct names, in stream order."""
    if not event_types or ALL in event_types:
        return None
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"Unknown event type(s): {', '.join(unknown)}.",
            details={"eventTypes": f"Use '*' or some of: {', '.join(EVENT_TYPES)}."},
        )
    return [t for t in EVENT_TYPES if t in event_types]


# --- reading ------------------------------------------------------------------------------------


def get(webhook_id: int) -> Webhook:
    webhook = db.session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound(f"No webhook with id {webhook_id}.")
    return webhook


def head_event_id() -> int:
    return db.session.scalar(select(func.coalesce(func.max(Event.id), 0)))


def delivery_dict(d: WebhookDelivery) -> dict:
    return {
        "id": d.id,
        "webhookId": d.webhook_id,
        "eventId": d.event_id,
        "eventType": d.event_type,
        "status": d.status,
        "statusCode": d.status_code,
        "attempts": d.attempts,
        "lastError": d.last_error,
        "createdAt": iso(d.created_at),
        "lastAttemptAt": iso(d.last_attempt_at),
        "nextAttemptAt": iso(d.next_attempt_at),
        "deliveredAt": iso(d.delivered_at),
    }


def webhook_dicts(webhooks: list[Webhook]) -> list[dict]:
    """The webhooks as the API shows them, each with its latest delivery (one query for all)."""
    ids = [w.id for w in webhooks]
    latest: dict[int, WebhookDelivery] = {}
    if ids:
        newest = (
            select(func.max(WebhookDelivery.id))
            .where(WebhookDelivery.webhook_id.in_(ids))
            .group_by(WebhookDelivery.webhook_id)
        )
        for d in db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(newest))):
            latest[d.webhook_id] = d
    return [
        {
            "id": w.id,
            "url": w.url,
            "eventTypes": w.event_types if w.event_types is not None else [ALL],
            "active": w.active,
            "secretHint": "…" + w.secret[-4:],
            "lastEventId": w.last_event_id,
            "createdBy": w.created_by,
            "createdAt": iso(w.created_at),
            "updatedAt": iso(w.updated_at),
            "lastDelivery": delivery_dict(latest[w.id]) if w.id in latest else None,
        }
        for w in webhooks
    ]


def webhook_dict(webhook: Webhook) -> dict:
    return webhook_dicts([webhook])[0]


# --- writing ------------------------------------------------------------------------------------


def create(
    *, url: str, event_types: list[str] | None, secret: str | None, actor: str | None
) -> tuple[Webhook, str]:
    """Register a receiver; it gets the events committed from now on. Returns it and its secret."""
    url = _check_url(url)
    types = _types(event_types)
    secret = secret or "whsec_" + secrets.token_urlsafe(32)
    now = utcnow()
    webhook = Webhook(
        url=url,
        event_types=types,
        secret=secret,
        active=True,
        created_by=actor,
        created_at=now,
        updated_at=now,
        last_event_id=head_event_id(),
    )
    db.session.add(webhook)
    db.session.commit()
    return webhook, secret


def update(
    webhook_id: int,
    *,
    url: str | None = None,
    event_types: list[str] | None = None,
    active: bool | None = None,
    secret: str | None = None,
) -> Webhook:
    """Change the URL, the types, the secret, or switch it on or off.

    Switched back on, it starts at the events committed from then on: what happened while it
    was off is not sent (its delivery log keeps what was).
    """
    webhook = db.session.scalars(
        select(Webhook).where(Webhook.id == webhook_id).with_for_update()
    ).one_or_none()
    if webhook is None:
        raise NotFound(f"No webhook with id {webhook_id}.")
    if url is not None:
        webhook.url = _check_url(url)
    if event_types is not None:
        webhook.event_types = _types(event_types)
    if secret is not None:
        webhook.secret = secret
    if active is not None and active != webhook.active:
        if active:
            webhook.last_event_id = head_event_id()
        else:
            _give_up_retries(webhook, "The webhook was switched off.")
        webhook.active = active
    webhook.updated_at = utcnow()
    db.session.commit()
    return webhook


def _give_up_retries(webhook: Webhook, why: str) -> None:
    """An event still being retried is not sent once the webhook is off: say so in the log."""
    for delivery in db.session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.status == "retrying"
        )
    ):
        delivery.status = "failed"
        delivery.next_attempt_at = None
        delivery.last_error = why

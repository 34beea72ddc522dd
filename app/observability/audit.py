"""Transitions and events, counted and logged once they are committed.

The lifecycle service is the one place transitions happen, and each of its writes ends in one
commit. Rather than a call after each commit, this module hooks that commit: rows of Transition
inserted by a flush, and the Transition and Event rows the service and the outbox insert with
plain statements (note_transition, note_event), are noted on the session; when it commits they are
counted (trackopz_transitions_total, trackopz_events_committed_total) and every transition is
logged with product, job, from, to, action, actor and reason. A rolled-back transaction's rows
are forgotten: what is logged is exactly what the audit table holds.
"""

from __future__ import annotations

import logging

from sqlalchemy import event, inspect

from app.models import Product, Transition
from app.observability import metrics

log = logging.getLogger("trackopz.transitions")

_KEY = "trackopz_observed"


def _noted(session) -> dict:
    return session.info.setdefault(_KEY, {"transitions": [], "events": []})


def note_transition(
    session, row: dict, *, product_name: str | None = None, request_id: str | None = None
) -> None:
    """A Transition row written in `session`'s transaction (by the ORM or by a statement);
    `request_id`: the request it was made for, where another request's transaction writes it
    (a group commit's)."""
    fields = _noted(session)["transitions"]
    fields.append(
        {
            "transition": row["id"],
            "product": row["product_id"],
            "product_name": product_name,
            "job": row["job_id"],
            "from": row["from_state"],
            "to": row["to_state"],
            "action": row["action"],
            "actor": row["actor"],
            "reason": row["reason"],
        }
    )
    if request_id is not None:
        fields[-1]["request_id"] = request_id


def note_event(session, type_: str) -> None:
    _noted(session)["events"].append(type_)


def _on_transition_insert(_mapper, _connection, target: Transition) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(target)
    if session is None:  # pragma: no cover - a flush always has its session
        return
    product = session.identity_map.get(session.identity_key(Product, target.product_id))
    name = inspect(product).dict.get("name") if product is not None else None
    fields = ("id", "product_id", "job_id", "from_state", "to_state", "action", "actor", "reason")
    note_transition(session, {f: getattr(target, f) for f in fields}, product_name=name)


def _after_commit(session) -> None:
    noted = session.info.pop(_KEY, None)
    if not noted:
        return
    for type_ in noted["events"]:
        metrics.EVENTS_COMMITTED.labels(type_).inc()
    for fields in noted["transitions"]:
        metrics.TRANSITIONS.labels(fields["action"]).inc()
        log.info(
            "transition %s: product %s%s, job %s, %s -> %s by %s",
            fields["action"],
            fields["product"],
            f" ({fields['product_name']})" if fields["product_name"] else "",
            fields["job"],
            fields["from"] or "none",
            fields["to"],
            fields["actor"] or "nobody",
            extra=fields,
        )


def _after_rollback(session) -> None:
    session.info.pop(_KEY, None)


def init_audit() -> None:
    """Listen once per process (the listeners are global, like the models)."""
    from flask_sqlalchemy.session import Session

    for target, name, fn in (
        (Transition, "after_insert", _on_transition_insert),
        (Session, "after_commit", _after_commit),
        (Session, "after_rollback", _after_rollback),
    ):
        if not event.contains(target, name, fn):
            event.listen(target, name, fn)

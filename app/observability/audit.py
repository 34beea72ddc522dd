"""Transitions and events, counted and logged once they are committed.

The lifecycle service is the one place transitions happen, and each of its writes ends in one
commit. Rather than a call after each commit, this module hooks that commit: rows of Transition
and Event inserted by a flush are noted on the session, and when the session commits they are
counted (trackopz_transitions_total, trackopz_events_committed_total) and every transition is
logged with product, job, from, to, action, actor and reason. A rolled-back transaction's rows
are forgotten: what is logged is exactly what the audit table holds.
"""

from __future__ import annotations

import logging

from sqlalchemy import event, inspect

from app.models import Event, Product, Transition
from app.observability import metrics

log = logging.getLogger("trackopz.transitions")

_KEY = "trackopz_observed"


def _noted(session) -> dict:
    return session.info.setdefault(_KEY, {"transitions": [], "events": []})


def _on_transition_insert(_mapper, _connection, target: Transition) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(target)
    if session is None:  # pragma: no cover - a flush always has its session
        return
    product = session.identity_map.get(session.identity_key(Product, target.product_id))
    name = inspect(product).dict.get("name") if product is not None else None
    _noted(session)["transitions"].append(
        {
            "transition": target.id,
            "product": target.product_id,
            "product_name": name,
            "job": target.job_id,
            "from": target.from_state,
            "to": target.to_state,
            "action": target.action,
            "actor": target.actor,
            "reason": target.reason,
        }
    )


def _on_event_insert(_mapper, _connection, target: Event) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(target)
    if session is not None:
        _noted(session)["events"].append(target.type)


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
        (Event, "after_insert", _on_event_insert),
        (Session, "after_commit", _after_commit),
        (Session, "after_rollback", _after_rollback),
    ):
        if not event.contains(target, name, fn):
            event.listen(target, name, fn)

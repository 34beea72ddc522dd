"""The dashboard's figures: counters from indexed columns, short capped lists."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from flask import current_app
from sqlalchemy import func, select

from app.common.schemas import iso
from app.extensions import db, hub
from app.lifecycle.reads import transition_dict
from app.lifecycle.service import dispatchable_rows, dispatchable_snapshot
from app.models import (
    OFF,
    ON,
    CatalogueVersion,
    Dispatch,
    Event,
    Job,
    Machine,
    Product,
    Transition,
    utcnow,
)
from app.realtime import livelist

LIST_CAP = 50


def _start_of_today() -> datetime:
    return datetime.combine(utcnow().date(), time.min)


def etag() -> str:
    """Changes with every event, every catalogue write that sends none (a product or machine
    added, a machine renamed: the catalogue's version), and at midnight UTC. Both numbers
    commit in order, so an ETag never stands for figures that miss a write it counted. The
    greatest product and machine ids add the rows written by hand in SQL (a bulk load), which
    raise no version. One statement."""
    event, version, products, machines = db.session.execute(
        select(
            select(func.coalesce(func.max(Event.id), 0)).scalar_subquery(),
            select(func.coalesce(func.max(CatalogueVersion.version), 0)).scalar_subquery(),
            select(func.coalesce(func.max(Product.id), 0)).scalar_subquery(),
            select(func.coalesce(func.max(Machine.id), 0)).scalar_subquery(),
        )
    ).one()
    day = utcnow().date().isoformat()
    return f"ev-{event}-c{version}-p{products}-m{machines}-{day}"


def _newest(column, newest_by, outer, *where):
    """For each row of `outer`: `column` of the newest row (by `newest_by`) that `where` picks."""
    return (
        select(column)
        .where(*where)
        .order_by(newest_by.desc())
        .limit(1)
        .correlate(outer)
        .scalar_subquery()
    )


def _live_products(last_event: int) -> list[dict]:
    """The first of the dispatchable list: from the worker's kept list where it has one."""
    kept = livelist.kept(current_app, db.session)
    if kept is not None:
        return kept.first(LIST_CAP, last_event, hub, dispatchable_snapshot)
    return dispatchable_rows(limit=LIST_CAP)


def _past_products() -> list[dict]:
    # Why each went past: the reason of its latest transition to OFF, found for each of the 50
    # through ix_transitions_product_id_id.
    reason = _newest(
        Transition.reason,
        Transition.id,
        Product,
        Transition.product_id == Product.id,
        Transition.to_state == OFF,
    )
    rows = db.session.execute(
        select(
            Product.id,
            Product.name,
            Product.code,
            Product.state_changed_at,
            Job.id,
            Job.stage,
            Machine.name,
            Job.quantity_produced,
            reason,
        )
        .join(Job, Job.id == Product.latest_job_id)
        .join(Machine, Machine.id == Job.machine_id)
        .where(Product.state == OFF)
        .order_by(Product.state_changed_at.desc(), Product.id.desc())
        .limit(LIST_CAP)
    ).all()
    return [
        {
            "id": pid,
            "name": name,
            "code": code,
            "status": OFF,
            "jobId": job_id,
            "stage": stage,
            "process": machine,
            "quantityProduced": produced,
            "reason": why,
            "endedAt": iso(changed),
        }
        for pid, name, code, changed, job_id, stage, machine, produced, why in rows
    ]


def _machine_board() -> list[dict]:
    # One row per machine: its newest ON job, looked up per machine through
    # ix_jobs_machine_state. (Joining every ON job and then every product made PostgreSQL hash
    # the whole products table: 100k rows read for a 12-row board.)
    newest_on = _newest(Job.id, Job.id, Machine, Job.machine_id == Machine.id, Job.state == ON)
    rows = db.session.execute(
        select(Machine, Product.id, Product.name, Job.updated_at)
        .outerjoin(Job, Job.id == newest_on)
        .outerjoin(Product, Product.id == Job.product_id)
        .order_by(Machine.id)
    ).all()
    board: dict[int, dict] = {}
    for machine, product_id, product_name, job_updated in rows:
        entry = board.get(machine.id)
        if entry is None:
            last = max(filter(None, [machine.updated_at, job_updated]))
            board[machine.id] = {
                "id": machine.id,
                "name": machine.name,
                "code": machine.code,
                "status": machine.status,
                "currentProduct": (
                    {"id": product_id, "name": product_name} if product_id else None
                ),
                "lastActivity": iso(last),
            }
    return list(board.values())


def _counts(today: datetime) -> tuple[int, ...]:
    """All products, the live ones, the past ones, today's transitions and dispatches, and the
    last event's id: one statement, one snapshot.

    Grouping the products by state reads the whole table; instead the live ones and those not
    started yet (state NULL: catalogued, no job) are counted through ix_products_state_changed,
    both small, and all of them with a plain count(*). Every other product is past: a product's
    state is NULL, ON or OFF, and products are never deleted.
    """

    def count(model, *where):
        return select(func.count()).select_from(model).where(*where).scalar_subquery()

    total, live, unstarted, transitions, dispatched, last_event = db.session.execute(
        select(
            count(Product),
            count(Product, Product.state == ON),
            count(Product, Product.state.is_(None)),
            count(Transition, Transition.created_at >= today),
            count(Dispatch, Dispatch.created_at >= today),
            select(func.coalesce(func.max(Event.id), 0)).scalar_subquery(),
        )
    ).one()
    return total, live, total - live - unstarted, transitions, dispatched, last_event


def with_now(figures: dict) -> dict:
    """`figures` with what changes without an event: the stream clients connected now, and the
    time of the answer."""
    realtime = {"connectedClients": hub.connected_clients(), **figures["realtime"]}
    return {**figures, "realtime": realtime, "lastUpdated": iso(utcnow())}


def figures() -> dict:
    """Counters, live and past products, the machine board and recent activity: what the
    dashboard's ETag names (etag()), so the route shares them while it holds."""
    total, live_count, past_count, transitions, dispatched, last_event = _counts(_start_of_today())
    board = _machine_board()
    active = sum(1 for machine in board if machine["status"] == "running")
    recent = db.session.execute(
        select(*Transition.__table__.c, Product.name.label("product_name"))
        .outerjoin(Product, Product.id == Transition.product_id)
        .order_by(Transition.id.desc())
        .limit(20)
    ).all()
    return {
        "stats": {
            "totalProducts": total,
            "liveProducts": live_count,
            "pastProducts": past_count,
            "dispatchableProducts": live_count,
            "totalMachines": len(board),
            "activeMachines": active,
            "inactiveMachines": len(board) - active,
            "transitionsToday": transitions,
            "dispatchedToday": dispatched,
        },
        "liveProducts": _live_products(last_event),
        "pastProducts": _past_products(),
        "machineStatus": board,
        "recentActivity": [{**transition_dict(t), "productName": t.product_name} for t in recent],
        "realtime": {"lastEventId": last_event},
    }


def daily(days: int) -> list[dict]:
    """Dispatches and transitions per UTC day, oldest first, zero-filled."""
    first = utcnow().date() - timedelta(days=days - 1)
    since = datetime.combine(first, time.min)

    def per_day(column, model) -> dict[str, int]:
        day = func.date(column)
        rows = db.session.execute(
            select(day, func.count()).select_from(model).where(column >= since).group_by(day)
        ).all()
        return {str(d): n for d, n in rows}

    dispatches = per_day(Dispatch.created_at, Dispatch)
    transitions = per_day(Transition.created_at, Transition)
    out = []
    for i in range(days):
        d = (first + timedelta(days=i)).isoformat()
        out.append(
            {"date": d, "dispatches": dispatches.get(d, 0), "transitions": transitions.get(d, 0)}
        )
    return out

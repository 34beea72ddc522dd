"""The dashboard's figures: counters from indexed columns, short capped lists."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from sqlalchemy import func, select

from app.common.schemas import iso
from app.extensions import db, hub
from app.lifecycle.reads import transition_dict
from app.lifecycle.service import dispatchable_rows, last_event_id
from app.models import OFF, ON, Dispatch, Job, Machine, Product, Transition, utcnow

LIST_CAP = 50


def _start_of_today() -> datetime:
    return datetime.combine(utcnow().date(), time.min)


def etag() -> str:
    """Changes with every event, every new product, every new or edited machine (a rename sends
    no event), and at midnight UTC. One statement; the machines are a shop floor, not a log."""
    products, machines, machine_edit = db.session.execute(
        select(
            select(func.coalesce(func.max(Product.id), 0)).scalar_subquery(),
            select(func.coalesce(func.max(Machine.id), 0)).scalar_subquery(),
            select(func.max(Machine.updated_at)).scalar_subquery(),
        )
    ).one()
    day = utcnow().date().isoformat()
    return f"ev-{last_event_id()}-p{products}-m{machines}.{_stamp(machine_edit)}-{day}"


def _stamp(value) -> str:
    """A timestamp as a short token (SQLite may hand back a string, Postgres a datetime)."""
    if value is None:
        return "0"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return f"{value:%Y%m%d%H%M%S%f}"


def _past_products() -> list[dict]:
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
        )
        .join(Job, Job.id == Product.latest_job_id)
        .join(Machine, Machine.id == Job.machine_id)
        .where(Product.state == OFF)
        .order_by(Product.state_changed_at.desc(), Product.id.desc())
        .limit(LIST_CAP)
    ).all()
    reasons = _last_reasons([row[0] for row in rows])
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
            "reason": reasons.get(pid),
            "endedAt": iso(changed),
        }
        for pid, name, code, changed, job_id, stage, machine, produced in rows
    ]


def _last_reasons(product_ids: list[int]) -> dict[int, str | None]:
    """Why each product went past: the reason of its latest transition to OFF."""
    if not product_ids:
        return {}
    latest = (
        select(func.max(Transition.id))
        .where(Transition.product_id.in_(product_ids), Transition.to_state == OFF)
        .group_by(Transition.product_id)
    )
    rows = db.session.execute(
        select(Transition.product_id, Transition.reason).where(Transition.id.in_(latest))
    ).all()
    return dict(rows)


def _machine_board() -> list[dict]:
    # One row per machine: its newest ON job, looked up per machine through
    # ix_jobs_machine_state. (Joining every ON job and then every product made PostgreSQL hash
    # the whole products table: 100k rows read for a 12-row board.)
    newest_on = (
        select(Job.id)
        .where(Job.machine_id == Machine.id, Job.state == ON)
        .order_by(Job.id.desc())
        .limit(1)
        .correlate(Machine)
        .scalar_subquery()
    )
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


def _product_counts() -> tuple[int, int, int]:
    """All products, the live ones and the past ones, in one statement (one snapshot).

    Grouping the products by state reads the whole table; instead the live ones and those not
    started yet (state NULL: catalogued, no job) are counted through ix_products_state_changed,
    both small, and all of them with a plain count(*). Every other product is past: a product's
    state is NULL, ON or OFF, and products are never deleted.
    """
    total, live, unstarted = db.session.execute(
        select(
            select(func.count()).select_from(Product).scalar_subquery(),
            select(func.count()).select_from(Product).where(Product.state == ON).scalar_subquery(),
            select(func.count())
            .select_from(Product)
            .where(Product.state.is_(None))
            .scalar_subquery(),
        )
    ).one()
    return total, live, total - live - unstarted


def with_now(figures: dict) -> dict:
    """`figures` with what changes without an event: the stream clients connected now, and the
    time of the answer."""
    realtime = {"connectedClients": hub.connected_clients(), **figures["realtime"]}
    return {**figures, "realtime": realtime, "lastUpdated": iso(utcnow())}


def figures() -> dict:
    """Counters, live and past products, the machine board and recent activity: what the
    dashboard's ETag names (etag()), so the route shares them while it holds."""
    today = _start_of_today()
    total, live_count, past_count = _product_counts()
    machine_counts = dict(
        db.session.execute(select(Machine.status, func.count()).group_by(Machine.status)).all()
    )
    live = dispatchable_rows(limit=LIST_CAP)
    recent = db.session.scalars(select(Transition).order_by(Transition.id.desc()).limit(20)).all()
    names = (
        dict(
            db.session.execute(
                select(Product.id, Product.name).where(
                    Product.id.in_({t.product_id for t in recent})
                )
            ).all()
        )
        if recent
        else {}
    )
    total_machines = sum(machine_counts.values())
    active = machine_counts.get("running", 0)
    stats = {
        "totalProducts": total,
        "liveProducts": live_count,
        "pastProducts": past_count,
        "dispatchableProducts": live_count,
        "totalMachines": total_machines,
        "activeMachines": active,
        "inactiveMachines": total_machines - active,
        "transitionsToday": db.session.scalar(
            select(func.count()).select_from(Transition).where(Transition.created_at >= today)
        ),
        "dispatchedToday": db.session.scalar(
            select(func.count()).select_from(Dispatch).where(Dispatch.created_at >= today)
        ),
    }
    return {
        "stats": stats,
        "liveProducts": live,
        "pastProducts": _past_products(),
        "machineStatus": _machine_board(),
        "recentActivity": [
            {**transition_dict(t), "productName": names.get(t.product_id)} for t in recent
        ],
        "realtime": {"lastEventId": last_event_id()},
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

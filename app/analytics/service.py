"""Analytics, computed in the database so that no range loads its rows into memory.

Medians and 90th percentiles use window functions (row_number and count over the group, in
SQLite 3.25+ and Postgres alike): the query returns only the (at most four) rows around each
percentile's position per group, and Python interpolates between two of them, as Postgres's
percentile_cont does. Days are UTC days; a range is [from 00:00, to + 1 day 00:00).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, Select, func, literal, or_, select

from app.extensions import db
from app.models import Dispatch, Job, Machine, OperatorProductUpdate

NO_STAGE = None  # jobs without a stage name are grouped under null


def bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time.min), datetime.combine(end + timedelta(days=1), time.min)


def seconds_between(earlier, later) -> ColumnElement:
    """`later - earlier` in seconds, as a float, on the session's database."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _day(column) -> ColumnElement:
    return func.date(column)


def percentiles(keys: list[ColumnElement], value: ColumnElement, where=None) -> dict[tuple, dict]:
    """{group key: {count, medianSeconds, p90Seconds}} for `value` grouped by `keys`."""
    ranked = (
        select(
            *[k.label(f"k{i}") for i, k in enumerate(keys)],
            value.label("v"),
            func.count().over(partition_by=keys).label("n"),
            func.row_number().over(partition_by=keys, order_by=value).label("rn"),
        )
        .where(*([] if where is None else [where]))
        .subquery()
    )
    n, rn = ranked.c.n, ranked.c.rn
    mid, p90 = (n - 1) // 2, (9 * (n - 1)) // 10
    stmt: Select = select(*[ranked.c[f"k{i}"] for i in range(len(keys))], n, rn, ranked.c.v).where(
        or_(rn - 1 == mid, rn - 1 == mid + 1, rn - 1 == p90, rn - 1 == p90 + 1)
    )
    groups: dict[tuple, tuple[int, dict[int, float]]] = {}
    for row in db.session.execute(stmt):
        key = tuple(row[: len(keys)])
        count, position, v = row[len(keys)], row[len(keys) + 1], row[len(keys) + 2]
        groups.setdefault(key, (count, {}))[1][position - 1] = float(v)
    return {
        key: {
            "count": count,
            "medianSeconds": _interpolate(values, count, 1, 2),
            "p90Seconds": _interpolate(values, count, 9, 10),
        }
        for key, (count, values) in groups.items()
    }


def _interpolate(values: dict[int, float], count: int, num: int, den: int) -> float:
    """The num/den quantile (linear between the two closest ranks, 0-based `values`)."""
    scaled = num * (count - 1)
    low, rest = divmod(scaled, den)
    a = values[low]
    b = values.get(low + 1, a)
    return round(a + (b - a) * rest / den, 3)


# --- the four figures ---------------------------------------------------------------------------


def stages(start: date, end: date) -> dict:
    """Time jobs that ended in the range took (createdAt to endedAt), per stage and per machine."""
    since, until = bounds(start, end)
    duration = seconds_between(Job.created_at, Job.ended_at)
    ended = (Job.ended_at.is_not(None)) & (Job.ended_at >= since) & (Job.ended_at < until)
    by_stage = percentiles([Job.stage], duration, ended)
    by_machine = percentiles([Job.machine_id], duration, ended)
    names = dict(
        db.session.execute(
            select(Machine.id, Machine.name).where(Machine.id.in_([k[0] for k in by_machine]))
        ).all()
    )
    return {
        "stages": sorted(
            ({"stage": key[0], **figures} for key, figures in by_stage.items()),
            key=lambda s: (s["stage"] is None, s["stage"] or ""),
        ),
        "machines": sorted(
            (
                {"machineId": key[0], "machineName": names.get(key[0]), **figures}
                for key, figures in by_machine.items()
            ),
            key=lambda m: (m["machineName"] or "", m["machineId"]),
        ),
    }


def lead_times(start: date, end: date) -> dict:
    """From a product's first job start to its dispatch, for the dispatches in the range."""
    since, until = bounds(start, end)
    first_start = (
        select(Job.product_id, func.min(Job.created_at).label("started"))
        .group_by(Job.product_id)
        .subquery()
    )
    lead = seconds_between(first_start.c.started, Dispatch.created_at)
    inner = (
        select(literal(1).label("grp"), lead.label("lead"))
        .select_from(Dispatch)
        .join(first_start, first_start.c.product_id == Dispatch.product_id)
        .where(Dispatch.created_at >= since, Dispatch.created_at < until)
        .subquery()
    )
    figures = percentiles([inner.c.grp], inner.c.lead, None)
    return figures.get((1,), {"count": 0, "medianSeconds": None, "p90Seconds": None})


def output(start: date, end: date) -> dict:
    """Quantity and scrap logged per UTC day, machine and operator."""
    since, until = bounds(start, end)
    day = _day(OperatorProductUpdate.created_at)
    rows = db.session.execute(
        select(
            day.label("day"),
            Job.machine_id,
            Machine.name,
            OperatorProductUpdate.operator,
            func.sum(OperatorProductUpdate.quantity),
            func.sum(OperatorProductUpdate.scrap_quantity),
            func.count(),
        )
        .join(Job, Job.id == OperatorProductUpdate.job_id)
        .join(Machine, Machine.id == Job.machine_id)
        .where(OperatorProductUpdate.created_at >= since, OperatorProductUpdate.created_at < until)
        .group_by(day, Job.machine_id, Machine.name, OperatorProductUpdate.operator)
        .order_by(day, Machine.name, Job.machine_id, OperatorProductUpdate.operator)
    ).all()
    out = [
        {
            "date": str(d),
            "machineId": machine_id,
            "machineName": name,
            "operator": operator,
            "quantity": int(quantity or 0),
            "scrap": int(scrap or 0),
            "updates": updates,
        }
        for d, machine_id, name, operator, quantity, scrap, updates in rows
    ]
    totals = {key: sum(r[key] for r in out) for key in ("quantity", "scrap", "updates")}
    return {"output": out, "totals": totals}


def dispatches(start: date, end: date) -> dict:
    """Dispatches and their quantity per UTC day and destination."""
    since, until = bounds(start, end)
    day = _day(Dispatch.created_at)
    rows = db.session.execute(
        select(day, Dispatch.destination, func.count(), func.sum(Dispatch.quantity))
        .where(Dispatch.created_at >= since, Dispatch.created_at < until)
        .group_by(day, Dispatch.destination)
        .order_by(day, Dispatch.destination)
    ).all()
    out = [
        {"date": str(d), "destination": dest, "count": n, "quantity": int(q or 0)}
        for d, dest, n, q in rows
    ]
    return {
        "dispatches": out,
        "totals": {
            "count": sum(r["count"] for r in out),
            "quantity": sum(r["quantity"] for r in out),
        },
    }

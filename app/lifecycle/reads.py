"""Read models of a product's life: its stages and its audit trail."""

from __future__ import annotations

from collections import namedtuple

from sqlalchemy import and_, bindparam, literal_column, select, true, union_all

from app.common.schemas import iso
from app.errors import NotFound
from app.extensions import db
from app.models import Job, Machine, Product, Transition


def get_product(product_id: int) -> Product:
    product = db.session.get(Product, product_id)
    if product is None:
        raise NotFound(f"No product with id {product_id}.")
    return product


def transition_dict(t: Transition) -> dict:
    return {
        "id": t.id,
        "productId": t.product_id,
        "jobId": t.job_id,
        "fromState": t.from_state,
        "toState": t.to_state,
        "action": t.action,
        "reason": t.reason,
        "actor": t.actor,
        "createdAt": iso(t.created_at),
    }


def job_dict(job: Job) -> dict:
    return {
        "id": job.id,
        "productId": job.product_id,
        "machineId": job.machine_id,
        "stage": job.stage,
        "operator": job.operator,
        "quantityPlanned": job.quantity_planned,
        "quantityProduced": job.quantity_produced,
        "state": job.state,
        "createdAt": iso(job.created_at),
        "updatedAt": iso(job.updated_at),
        "endedAt": iso(job.ended_at),
    }


_P, _J, _M, _T = Product.__table__, Job.__table__, Machine.__table__, Transition.__table__
_PRODUCT = [_P.c.id, _P.c.name, _P.c.code, _P.c.state, _P.c.created_at, _P.c.state_changed_at]
_JOB = [*_J.c, _M.c.name, _M.c.status]
_ProductRow = namedtuple("_ProductRow", [c.name for c in _PRODUCT])
_JobRow = namedtuple("_JobRow", [c.name for c in _J.c] + ["machine_name", "status_"])
_TransitionRow = namedtuple("_TransitionRow", [c.name for c in _T.c])
# Side 0 rows carry the product's jobs, side 1 rows its transitions: one statement, each row
# with the product's columns in front (and one row of NULLs for a side that has none).
_SIDE = union_all(
    select(literal_column("0").label("n")), select(literal_column("1").label("n"))
).subquery("side")
_LIFECYCLE = (
    select(*_PRODUCT, *_JOB, *_T.c)
    .select_from(
        _P.join(_SIDE, true())
        .outerjoin(_J, and_(_SIDE.c.n == literal_column("0"), _J.c.product_id == _P.c.id))
        .outerjoin(_M, _M.c.id == _J.c.machine_id)
        .outerjoin(_T, and_(_SIDE.c.n == literal_column("1"), _T.c.product_id == _P.c.id))
    )
    .where(_P.c.id == bindparam("pid"))
    .order_by(_SIDE.c.n, _J.c.id, _T.c.id)
)
_PRODUCT_AT = slice(0, len(_PRODUCT))
_JOB_AT = slice(_PRODUCT_AT.stop, _PRODUCT_AT.stop + len(_JOB))
_TRANSITION_AT = slice(_JOB_AT.stop, None)


def lifecycle(product_id: int) -> dict:
    """Every stage (oldest first) and every transition of one product.

    Plain rows, no ORM objects: the write path returns this with every transition, so it is
    read with one cached statement and built straight from the rows.
    """
    return lifecycle_from(
        db.session.connection().execute(*lifecycle_statement(product_id)).all(), product_id
    )


def lifecycle_statement(product_id: int) -> tuple:
    """The statement lifecycle() runs, with its parameters, for a caller that sends it itself
    (the write path: with its commit); lifecycle_from() builds the answer from its rows."""
    return _LIFECYCLE, {"pid": product_id}


def lifecycle_from(found, product_id: int) -> dict:
    if not found:
        raise NotFound(f"No product with id {product_id}.")
    product = _ProductRow._make(found[0][_PRODUCT_AT])
    rows = [_JobRow._make(r[_JOB_AT]) for r in found if r[_JOB_AT.start] is not None]
    transitions = [
        _TransitionRow._make(r[_TRANSITION_AT])
        for r in found
        if r[_TRANSITION_AT.start] is not None
    ]
    stages = []
    for number, job in enumerate(rows, start=1):
        duration = (job.ended_at - job.created_at).total_seconds() if job.ended_at else None
        stages.append(
            {
                "stageNumber": number,
                "jobId": job.id,
                "machineId": job.machine_id,
                "machine": job.machine_name,
                "stage": job.stage,
                "state": job.state,
                "operator": job.operator,
                "timestamp": iso(job.created_at),
                "endedAt": iso(job.ended_at),
                "duration": round(duration, 3) if duration is not None else None,
                "quantityProduced": job.quantity_produced,
            }
        )
    current_machine = current_job = None
    stamps = [product.created_at, product.state_changed_at]
    if rows:
        job = rows[-1]
        current_job = job_dict(job)
        current_machine = {"id": job.machine_id, "name": job.machine_name, "status": job.status_}
        stamps.append(job.updated_at)
    if transitions:
        stamps.append(transitions[-1].created_at)
    return {
        "productId": product.id,
        "productName": product.name,
        "productCode": product.code,
        "currentState": product.state,
        "isDispatchable": product.state == "ON",
        "currentMachine": current_machine,
        "currentJob": current_job,
        "totalStages": len(stages),
        "stages": stages,
        "transitions": [transition_dict(t) for t in transitions],
        "createdAt": iso(product.created_at),
        "lastUpdated": iso(max(s for s in stamps if s is not None)),
    }


def transition_history(product_id: int) -> dict:
    """The product's transitions, newest first."""
    product = get_product(product_id)
    transitions = db.session.scalars(
        select(Transition).where(Transition.product_id == product.id).order_by(Transition.id.desc())
    ).all()
    return {
        "productId": product.id,
        "currentState": product.state,
        "transitionHistory": [transition_dict(t) for t in transitions],
    }

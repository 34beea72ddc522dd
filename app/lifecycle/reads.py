"""Read models of a product's life: its stages and its audit trail."""

from __future__ import annotations

from collections import namedtuple

from sqlalchemy import bindparam, select

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
# Two plain statements, each planned in a fraction of what one statement of both took: the
# product with its jobs, oldest first, each with its machine (one row of NULL job columns if it
# has none), and its transitions.
_STAGES = (
    select(*_PRODUCT, *_JOB)
    .select_from(
        _P.outerjoin(_J, _J.c.product_id == _P.c.id).outerjoin(_M, _M.c.id == _J.c.machine_id)
    )
    .where(_P.c.id == bindparam("pid"))
    .order_by(_J.c.id)
)
_TRANSITIONS = select(*_T.c).where(_T.c.product_id == bindparam("pid")).order_by(_T.c.id)
_JOB_AT = slice(len(_PRODUCT), None)


def lifecycle(product_id: int) -> dict:
    """Every stage (oldest first) and every transition of one product.

    Plain rows, no ORM objects: the write path returns this with every transition, so it is
    read with cached statements and built straight from the rows. (Outside a write, the two
    statements read two snapshots: a change committed between them shows in one only.)
    """
    conn = db.session.connection()
    found = [conn.execute(stmt, params).all() for stmt, params in lifecycle_statements(product_id)]
    return lifecycle_from(*found, product_id)


def lifecycle_statements(product_id: int) -> list[tuple]:
    """The statements lifecycle() runs, with their parameters, for a caller that sends them
    itself (the write path: with its commit, under the product's lock); lifecycle_from() builds
    the answer from their rows."""
    params = {"pid": product_id}
    return [(_STAGES, params), (_TRANSITIONS, params)]


def lifecycle_from(found, transition_rows, product_id: int) -> dict:
    if not found:
        raise NotFound(f"No product with id {product_id}.")
    product = _ProductRow._make(found[0][: _JOB_AT.start])
    rows = [_JobRow._make(r[_JOB_AT]) for r in found if r[_JOB_AT.start] is not None]
    transitions = [_TransitionRow._make(r) for r in transition_rows]
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

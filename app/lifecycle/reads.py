"""Read models of a product's life: its stages and its audit trail."""

from __future__ import annotations

from sqlalchemy import select

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


def lifecycle(product_id: int) -> dict:
    """Every stage (oldest first) and every transition of one product."""
    product = get_product(product_id)
    rows = db.session.execute(
        select(Job, Machine.name, Machine.status)
        .join(Machine, Machine.id == Job.machine_id)
        .where(Job.product_id == product.id)
        .order_by(Job.id)
    ).all()
    transitions = db.session.scalars(
        select(Transition).where(Transition.product_id == product.id).order_by(Transition.id)
    ).all()
    stages = []
    for number, (job, machine_name, _status) in enumerate(rows, start=1):
        duration = (job.ended_at - job.created_at).total_seconds() if job.ended_at else None
        stages.append(
            {
                "stageNumber": number,
                "jobId": job.id,
                "machineId": job.machine_id,
                "machine": machine_name,
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
    if rows:
        job, machine_name, machine_status = rows[-1]
        current_job = job_dict(job)
        current_machine = {"id": job.machine_id, "name": machine_name, "status": machine_status}
    stamps = [product.created_at, product.state_changed_at]
    if rows:
        stamps.append(rows[-1][0].updated_at)
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

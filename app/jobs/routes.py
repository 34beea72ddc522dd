from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app.auth.guard import requires
from app.common.blueprint import current_actor
from app.common.http import page
from app.errors import NotFound
from app.extensions import db
from app.jobs import bp
from app.jobs.schemas import (
    DispatchesEnvelope,
    DispatchListArgs,
    JobCreateSchema,
    JobEnvelope,
    JobListArgs,
    JobsEnvelope,
    PagedArgs,
    UpdateCreateSchema,
    UpdateEnvelope,
    UpdatesEnvelope,
)
from app.lifecycle import service
from app.models import Dispatch, Job, OperatorProductUpdate


def _job_or_404(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound(f"No job with id {job_id}.")
    return job


@bp.post("/jobs")
@requires("operator")
@bp.arguments(JobCreateSchema)
@bp.response(201, JobEnvelope)
def start_job(body):
    """Start a job for a product on a machine; a running job of that product is finished first."""
    return {"job": service.start_job(**body, actor=current_actor())}


@bp.get("/jobs")
@bp.arguments(JobListArgs, location="query")
@bp.response(200, JobsEnvelope)
def list_jobs(args):
    """List jobs, newest first, by state, product or machine."""
    stmt = select(Job)
    if args["state"]:
        stmt = stmt.where(Job.state == args["state"])
    if args["product_id"]:
        stmt = stmt.where(Job.product_id == args["product_id"])
    if args["machine_id"]:
        stmt = stmt.where(Job.machine_id == args["machine_id"])
    jobs, next_cursor = page(stmt, Job.id, limit=args["limit"], cursor=args["cursor"])
    return {"jobs": jobs, "nextCursor": next_cursor}


@bp.get("/jobs/<int:job_id>")
@bp.response(200, JobEnvelope)
def show_job(job_id):
    """One job."""
    return {"job": _job_or_404(job_id)}


@bp.post("/jobs/<int:job_id>/updates")
@requires("operator")
@bp.arguments(UpdateCreateSchema)
@bp.response(201, UpdateEnvelope)
def log_update(body, job_id):
    """Log finished output against a running job."""
    return {"update": service.log_update(job_id=job_id, **body)}


@bp.get("/jobs/<int:job_id>/updates")
@bp.arguments(PagedArgs, location="query")
@bp.response(200, UpdatesEnvelope)
def list_updates(args, job_id):
    """The output logged against a job, newest first."""
    _job_or_404(job_id)
    stmt = select(OperatorProductUpdate).where(OperatorProductUpdate.job_id == job_id)
    updates, next_cursor = page(
        stmt, OperatorProductUpdate.id, limit=args["limit"], cursor=args["cursor"]
    )
    return {"updates": updates, "nextCursor": next_cursor}


@bp.get("/dispatches")
@bp.arguments(DispatchListArgs, location="query")
@bp.response(200, DispatchesEnvelope)
def list_dispatches(args):
    """Dispatches, newest first; ?productId= for one product's."""
    stmt = select(Dispatch).options(joinedload(Dispatch.product))
    if args["product_id"]:
        stmt = stmt.where(Dispatch.product_id == args["product_id"])
    dispatches, next_cursor = page(stmt, Dispatch.id, limit=args["limit"], cursor=args["cursor"])
    return {"dispatches": dispatches, "nextCursor": next_cursor}

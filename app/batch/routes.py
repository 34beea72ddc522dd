from flask import g, jsonify

from app.auth.guard import requires
from app.auth.service import allows
from app.batch import bp, service
from app.batch.schemas import BatchResultSchema, DispatchBatchSchema, LifecycleBatchSchema
from app.common.blueprint import current_actor
from app.lifecycle.routes import _role_for


def _authorize(item: dict) -> None:
    """Each item needs the role its single call needs (reactivating is a dispatcher's call)."""
    needed = _role_for(item["action"], item.get("new_state"))
    role = g.user.role
    if not allows(role, needed):
        raise service.NotAllowed(f"Your role ({role}) cannot do this; it needs {needed}.")


def _respond(result: service.BatchResult):
    failed = len(result.failed)
    body = {
        "success": result.applied,
        "atomic": result.atomic,
        "applied": result.applied,
        "succeeded": result.succeeded,
        "failed": failed,
        "results": result.results,
    }
    if result.applied:
        return jsonify(body)
    positions = ", ".join(str(i + 1) for i in result.failed)
    error = f"Nothing was changed: item(s) {positions} of {len(result.results)} failed."
    return jsonify({"success": False, "error": error, **body}), 409


@bp.post("/products/lifecycle/batch")
@requires("operator")
@bp.arguments(LifecycleBatchSchema)
@bp.response(200, BatchResultSchema)
@bp.alt_response(409, schema=BatchResultSchema, description="An atomic batch rolled back")
def lifecycle_batch(body):
    """Several lifecycle actions; per-item results in order; atomic: all or nothing."""
    items = [
        {key: action[key] for key in ("product_id", "job_id", "action", "reason", "new_state")}
        for action in body["actions"]
    ]
    result = service.run(items, atomic=body["atomic"], actor=current_actor(), authorize=_authorize)
    return _respond(result)


@bp.post("/live-products/dispatchable/batch")
@requires("dispatcher")
@bp.arguments(DispatchBatchSchema)
@bp.response(200, BatchResultSchema)
@bp.alt_response(409, schema=BatchResultSchema, description="An atomic batch rolled back")
def dispatch_batch(body):
    """Dispatch several live products to one destination; each is recorded as a single dispatch."""
    details = {"destination": body["destination"], "notes": body["notes"]}
    items = [
        {
            "product_id": product_id,
            "action": "move_to_past",
            "reason": "dispatched",
            "dispatch": details,
        }
        for product_id in body["product_ids"]
    ]
    return _respond(service.run(items, atomic=body["atomic"], actor=current_actor()))

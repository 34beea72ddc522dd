from flask import current_app, jsonify

from app.auth.guard import require_role, requires
from app.common.blueprint import current_actor
from app.common.http import not_modified, shared_for_etag, with_etag
from app.common.schemas import iso
from app.extensions import db, hub
from app.lifecycle import bp, reads, service
from app.lifecycle.schemas import (
    DispatchableSchema,
    DispatchCreateSchema,
    HistorySchema,
    LifecycleActionSchema,
    LifecycleEnvelope,
    MoveToPastSchema,
    ProductQuery,
    TransitionResultSchema,
)
from app.realtime import livelist

MESSAGES = {
    ("move_to_past", "dispatched"): "{name} was dispatched and moved to past.",
    "move_to_past": "{name} moved to past.",
    "reactivate": "{name} is live again.",
    "update_state": "{name} is now {state}.",
}


def _result(outcome: service.Outcome) -> dict:
    name = outcome.product["name"]
    template = MESSAGES.get((outcome.action, outcome.reason)) or MESSAGES[outcome.action]
    body = {
        "success": True,
        "message": template.format(name=name, state=outcome.new_state),
        "previousState": outcome.previous_state,
        "newState": outcome.new_state,
        "action": outcome.action,
        "reason": outcome.reason,
        "timestamp": iso(outcome.timestamp),
        "lifecycle": outcome.lifecycle,
        "transition": outcome.transition,
    }
    if outcome.dispatch is not None:
        body["dispatch"] = outcome.dispatch
    return body


def _role_for(action: str, new_state: str | None) -> str:
    """Operators take products out of production; bringing one back is a dispatcher's call."""
    if action == "reactivate" or (action == "update_state" and new_state == "ON"):
        return "dispatcher"
    return "operator"


@bp.get("/live-products/dispatchable")
@bp.response(200, DispatchableSchema)
@bp.alt_response(304, description="Nothing changed since the ETag in If-None-Match")
def dispatchable():
    """The live products, which are the ones that may be dispatched."""
    last_event = service.last_event_id()
    etag = f"ev-{last_event}"
    cached = not_modified(etag)
    if cached is not None:
        return cached
    kept = livelist.kept(current_app, db.session)
    if kept is not None:  # brought forward with the hub's updates (app/realtime/livelist.py)
        body = kept.answer(last_event, hub, service.dispatchable_snapshot)
    else:
        body = shared_for_etag("dispatchable", etag, _dispatchable_body)
    return with_etag(body, etag)


def _dispatchable_body() -> str:
    items, count = service.dispatchable_json()
    return f'{{"success":true,"dispatchableProducts":{items},"count":{count}}}'


@bp.post("/live-products/dispatchable")
@requires("dispatcher")
@bp.arguments(DispatchCreateSchema)
@bp.response(200, TransitionResultSchema)
def dispatch(body):
    """Dispatch a live product: record the Dispatch and move it to past, in one transaction."""
    return jsonify(_result(service.dispatch(**body, actor=current_actor())))


@bp.get("/products/lifecycle")
@bp.arguments(ProductQuery, location="query")
@bp.response(200, LifecycleEnvelope)
def lifecycle(args):
    """A product's stages and transitions."""
    return jsonify({"success": True, "lifecycle": reads.lifecycle(args["product_id"])})


@bp.post("/products/lifecycle")
@bp.arguments(LifecycleActionSchema)
@bp.response(200, TransitionResultSchema)
def change_state(body):
    """move_to_past, reactivate, or update_state with newState."""
    require_role(_role_for(body["action"], body.get("new_state")))
    return jsonify(_result(service.change_state(**body, actor=current_actor())))


@bp.post("/products/move-to-past")
@requires("operator")
@bp.arguments(MoveToPastSchema)
@bp.response(200, TransitionResultSchema)
def move_to_past(body):
    """The legacy name for move_to_past; the reason defaults to 'dispatched'."""
    outcome = service.change_state(action="move_to_past", actor=current_actor(), **body)
    return jsonify(_result(outcome))


@bp.get("/products/move-to-past")
@bp.arguments(ProductQuery, location="query")
@bp.response(200, HistorySchema)
def history(args):
    """A product's transitions, newest first."""
    return jsonify({"success": True, **reads.transition_history(args["product_id"])})

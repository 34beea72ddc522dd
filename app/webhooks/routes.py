from flask import jsonify
from sqlalchemy import select

from app.auth.guard import requires
from app.common.blueprint import current_actor
from app.common.http import page
from app.webhooks import api_bp as bp
from app.webhooks import service
from app.webhooks.models import Webhook, WebhookDelivery
from app.webhooks.schemas import (
    DeliveriesEnvelope,
    DeliveryListArgs,
    WebhookCreateSchema,
    WebhookEnvelope,
    WebhookListArgs,
    WebhooksEnvelope,
    WebhookUpdateSchema,
)


@bp.post("/webhooks")
@requires("manager")
@bp.arguments(WebhookCreateSchema)
@bp.response(201, WebhookEnvelope)
def create(body):
    """Register a webhook; it receives the events committed from now on."""
    webhook, secret = service.create(**body, actor=current_actor())
    return jsonify(
        {"success": True, "webhook": service.webhook_dict(webhook), "secret": secret}
    ), 201


@bp.get("/webhooks")
@requires("manager")
@bp.arguments(WebhookListArgs, location="query")
@bp.response(200, WebhooksEnvelope)
def list_webhooks(args):
    """The webhooks, newest first, each with its latest delivery."""
    stmt = select(Webhook)
    if args["active"] is not None:
        stmt = stmt.where(Webhook.active == args["active"])
    rows, next_cursor = page(stmt, Webhook.id, limit=args["limit"], cursor=args["cursor"])
    return jsonify(
        {"success": True, "webhooks": service.webhook_dicts(rows), "nextCursor": next_cursor}
    )


@bp.get("/webhooks/<int:webhook_id>")
@requires("manager")
@bp.response(200, WebhookEnvelope)
def show(webhook_id):
    """One webhook."""
    return jsonify({"success": True, "webhook": service.webhook_dict(service.get(webhook_id))})


@bp.patch("/webhooks/<int:webhook_id>")
@requires("manager")
@bp.arguments(WebhookUpdateSchema)
@bp.response(200, WebhookEnvelope)
def update(body, webhook_id):
    """Change the URL, event types or secret, or switch it on (from the next event) or off."""
    webhook = service.update(webhook_id, **body)
    return jsonify({"success": True, "webhook": service.webhook_dict(webhook)})


@bp.delete("/webhooks/<int:webhook_id>")
@requires("manager")
@bp.response(200, WebhookEnvelope)
def deactivate(webhook_id):
    """Switch a webhook off; it and its delivery log stay."""
    webhook = service.update(webhook_id, active=False)
    return jsonify({"success": True, "webhook": service.webhook_dict(webhook)})


@bp.get("/webhooks/<int:webhook_id>/deliveries")
@requires("manager")
@bp.arguments(DeliveryListArgs, location="query")
@bp.response(200, DeliveriesEnvelope)
def deliveries(args, webhook_id):
    """A webhook's delivery log, newest first: event, status, status code, attempts, last error."""
    service.get(webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if args["status"]:
        stmt = stmt.where(WebhookDelivery.status == args["status"])
    rows, next_cursor = page(stmt, WebhookDelivery.id, limit=args["limit"], cursor=args["cursor"])
    return jsonify(
        {
            "success": True,
            "deliveries": [service.delivery_dict(d) for d in rows],
            "nextCursor": next_cursor,
        }
    )

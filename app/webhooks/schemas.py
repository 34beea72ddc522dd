from marshmallow import EXCLUDE, fields, validate

from app.common.schemas import CamelSchema, PageArgs, Text
from app.webhooks.service import ALL, EVENT_TYPES

TYPE_NAMES = validate.OneOf(
    [ALL, *EVENT_TYPES], error="Unknown event type; use '*' or one of the stream's types."
)


def _types_field(**kwargs):
    return fields.List(
        fields.String(validate=TYPE_NAMES),
        validate=validate.Length(min=1, max=len(EVENT_TYPES) + 1),
        metadata={"description": "Event types to send; ['*'] for every type", "example": [ALL]},
        **kwargs,
    )


class WebhookCreateSchema(CamelSchema):
    url = Text(max_length=2000, min_length=1, required=True)
    event_types = _types_field(load_default=None)
    secret = Text(
        max_length=200,
        min_length=16,
        load_default=None,
        metadata={"description": "HMAC key for X-TrackOPZ-Signature; made for you when left out"},
    )


class WebhookUpdateSchema(CamelSchema):
    url = Text(max_length=2000, min_length=1)
    event_types = _types_field()
    secret = Text(max_length=200, min_length=16)
    active = fields.Boolean()


class WebhookListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE

    active = fields.Boolean(load_default=None)


class DeliveryListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(
        load_default=None, validate=validate.OneOf(["retrying", "delivered", "failed"])
    )


class DeliverySchema(CamelSchema):
    id = fields.Integer()
    webhook_id = fields.Integer()
    event_id = fields.Integer()
    event_type = fields.String()
    status = fields.String(metadata={"description": "retrying, delivered or failed"})
    status_code = fields.Integer(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = fields.String()
    last_attempt_at = fields.String(allow_none=True)
    next_attempt_at = fields.String(allow_none=True)
    delivered_at = fields.String(allow_none=True)


class WebhookSchema(CamelSchema):
    id = fields.Integer()
    url = fields.String()
    event_types = fields.List(fields.String())
    active = fields.Boolean()
    secret_hint = fields.String(metadata={"description": "The secret's last four characters"})
    last_event_id = fields.Integer(metadata={"description": "Every event up to it is handled"})
    created_by = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()
    last_delivery = fields.Nested(DeliverySchema, allow_none=True)


class WebhookEnvelope(CamelSchema):
    success = fields.Boolean()
    webhook = fields.Nested(WebhookSchema)
    secret = fields.String(
        metadata={"description": "Only when created: keep it, it is not shown again"}
    )


class WebhooksEnvelope(CamelSchema):
    success = fields.Boolean()
    webhooks = fields.List(fields.Nested(WebhookSchema))
    next_cursor = fields.String(allow_none=True)


class DeliveriesEnvelope(CamelSchema):
    success = fields.Boolean()
    deliveries = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)

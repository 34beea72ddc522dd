from marshmallow import EXCLUDE, fields, validate

from app.common.schemas import CamelSchema, Count, Id, Text


class ProductQuery(CamelSchema):
    class Meta:
        unknown = EXCLUDE

    product_id = Id(required=True)


class DispatchableItemSchema(CamelSchema):
    id = fields.Integer(metadata={"description": "The product's id"})
    name = fields.String()
    code = fields.String()
    process = fields.String(metadata={"description": "The current machine's name"})
    machine_id = fields.Integer()
    job_id = fields.Integer()
    stage = fields.String(allow_none=True)
    status = fields.String()
    created_at = fields.String(metadata={"description": "When the latest job started"})
    quantity_produced = fields.Integer()


class DispatchableSchema(CamelSchema):
    success = fields.Boolean()
    dispatchable_products = fields.List(fields.Nested(DispatchableItemSchema))
    count = fields.Integer()


class TransitionSchema(CamelSchema):
    id = fields.Integer()
    product_id = fields.Integer()
    job_id = fields.Integer()
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    action = fields.String()
    reason = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)
    created_at = fields.String()


class StageSchema(CamelSchema):
    stage_number = fields.Integer()
    job_id = fields.Integer()
    machine_id = fields.Integer()
    machine = fields.String()
    stage = fields.String(allow_none=True)
    state = fields.String()
    operator = fields.String(allow_none=True)
    timestamp = fields.String()
    ended_at = fields.String(allow_none=True)
    duration = fields.Float(allow_none=True, metadata={"description": "seconds"})
    quantity_produced = fields.Integer()


class LifecycleSchema(CamelSchema):
    product_id = fields.Integer()
    product_name = fields.String()
    product_code = fields.String()
    current_state = fields.String(allow_none=True)
    is_dispatchable = fields.Boolean()
    current_machine = fields.Dict(allow_none=True)
    current_job = fields.Dict(allow_none=True)
    total_stages = fields.Integer()
    stages = fields.List(fields.Nested(StageSchema))
    transitions = fields.List(fields.Nested(TransitionSchema))
    created_at = fields.String()
    last_updated = fields.String()


class LifecycleEnvelope(CamelSchema):
    success = fields.Boolean()
    lifecycle = fields.Nested(LifecycleSchema)


class LifecycleActionSchema(CamelSchema):
    product_id = Id(required=True)
    job_id = Id(load_default=None)
    action = fields.String(required=True, validate=validate.Length(min=1, max=40))
    reason = Text(max_length=500, allow_none=True, load_default=None)
    new_state = fields.String(
        validate=validate.OneOf(["ON", "OFF"]), allow_none=True, load_default=None
    )


class MoveToPastSchema(CamelSchema):
    product_id = Id(required=True)
    job_id = Id(load_default=None)
    reason = Text(max_length=500, allow_none=True, load_default="dispatched")


class DispatchCreateSchema(CamelSchema):
    product_id = Id(required=True)
    job_id = Id(load_default=None)
    quantity = Count(minimum=1, allow_none=True, load_default=None)
    destination = Text(max_length=200, allow_none=True, load_default=None)
    notes = Text(max_length=2000, allow_none=True, load_default=None)


class TransitionResultSchema(CamelSchema):
    success = fields.Boolean()
    message = fields.String()
    previous_state = fields.String(allow_none=True)
    new_state = fields.String()
    action = fields.String()
    reason = fields.String(allow_none=True)
    timestamp = fields.String()
    lifecycle = fields.Nested(LifecycleSchema)
    transition = fields.Nested(TransitionSchema)
    dispatch = fields.Dict()


class HistorySchema(CamelSchema):
    success = fields.Boolean()
    product_id = fields.Integer()
    current_state = fields.String(allow_none=True)
    transition_history = fields.List(fields.Nested(TransitionSchema))

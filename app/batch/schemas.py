from marshmallow import ValidationError, fields, validate, validates

from app.batch.service import MAX_ITEMS
from app.common.schemas import CamelSchema, Id, Text

ACTIONS = ["move_to_past", "reactivate", "update_state"]
SIZE = validate.Length(min=1, max=MAX_ITEMS, error=f"Give 1 to {MAX_ITEMS} items.")


class BatchActionSchema(CamelSchema):
    product_id = Id(required=True)
    job_id = Id(load_default=None)
    action = fields.String(
        required=True,
        validate=validate.OneOf(ACTIONS, error="Unknown action; use " + ", ".join(ACTIONS) + "."),
    )
    reason = Text(max_length=500, allow_none=True, load_default=None)
    new_state = fields.String(
        validate=validate.OneOf(["ON", "OFF"]), allow_none=True, load_default=None
    )


class LifecycleBatchSchema(CamelSchema):
    actions = fields.List(fields.Nested(BatchActionSchema), required=True, validate=SIZE)
    atomic = fields.Boolean(
        load_default=False,
        metadata={"description": "All or nothing: one failed item and no item is applied (409)"},
    )


class DispatchBatchSchema(CamelSchema):
    product_ids = fields.List(Id(), required=True, validate=SIZE)
    destination = Text(max_length=200, min_length=1, required=True)
    notes = Text(max_length=2000, allow_none=True, load_default=None)
    atomic = fields.Boolean(load_default=False)

    @validates("product_ids")
    def _once_each(self, value, **_kwargs):
        if len(set(value)) != len(value):
            raise ValidationError("Name each product once.")


class ItemResultSchema(CamelSchema):
    product_id = fields.Integer()
    success = fields.Boolean()
    status = fields.Integer(
        metadata={"description": "The HTTP code the single call would have answered (failures)"}
    )
    error = fields.String()
    previous_state = fields.String(allow_none=True)
    new_state = fields.String()
    transition = fields.Dict()
    dispatch = fields.Dict()


class BatchResultSchema(CamelSchema):
    success = fields.Boolean()
    atomic = fields.Boolean()
    applied = fields.Boolean(metadata={"description": "False when an atomic batch rolled back"})
    succeeded = fields.Integer()
    failed = fields.Integer()
    results = fields.List(fields.Nested(ItemResultSchema))

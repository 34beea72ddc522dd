from marshmallow import EXCLUDE, fields, validate

from app.common.schemas import CamelSchema, Count, Id, PageArgs, Text, UTCDateTime, envelope


class JobSchema(CamelSchema):
    id = fields.Integer()
    product_id = fields.Integer()
    machine_id = fields.Integer()
    stage = fields.String(allow_none=True)
    operator = fields.String(allow_none=True)
    quantity_planned = fields.Integer(allow_none=True)
    quantity_produced = fields.Integer()
    state = fields.String()
    created_at = UTCDateTime()
    updated_at = UTCDateTime()
    ended_at = UTCDateTime(allow_none=True)


class JobCreateSchema(CamelSchema):
    product_id = Id(required=True)
    machine_id = Id(required=True)
    stage = Text(max_length=200, allow_none=True, load_default=None)
    operator = Text(max_length=120, allow_none=True, load_default=None)
    quantity_planned = Count(minimum=1, allow_none=True, load_default=None)


class JobListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE

    state = fields.String(validate=validate.OneOf(["ON", "OFF"]), load_default=None)
    product_id = Id(load_default=None)
    machine_id = Id(load_default=None)


class UpdateSchema(CamelSchema):
    id = fields.Integer()
    job_id = fields.Integer()
    product_id = fields.Integer()
    operator = fields.String()
    quantity = fields.Integer()
    scrap_quantity = fields.Integer()
    note = fields.String(allow_none=True)
    created_at = UTCDateTime()


class UpdateCreateSchema(CamelSchema):
    operator = Text(required=True, min_length=1, max_length=120)
    quantity = Count(required=True, minimum=1)
    scrap_quantity = Count(minimum=0, load_default=0)
    note = Text(max_length=2000, allow_none=True, load_default=None)


class DispatchSchema(CamelSchema):
    id = fields.Integer()
    product_id = fields.Integer()
    job_id = fields.Integer()
    quantity = fields.Integer(allow_none=True)
    destination = fields.String(allow_none=True)
    notes = fields.String(allow_none=True)
    dispatched_by = fields.String(allow_none=True)
    created_at = UTCDateTime()
    product_name = fields.Function(lambda d: d.product.name)
    product_code = fields.Function(lambda d: d.product.code)


class DispatchListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE

    product_id = Id(load_default=None)


class PagedArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE


JobEnvelope = envelope("job", JobSchema)
JobsEnvelope = envelope("jobs", JobSchema, many=True, paged=True)
UpdateEnvelope = envelope("update", UpdateSchema)
UpdatesEnvelope = envelope("updates", UpdateSchema, many=True, paged=True)
DispatchesEnvelope = envelope("dispatches", DispatchSchema, many=True, paged=True)

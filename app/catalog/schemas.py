from marshmallow import EXCLUDE, fields, validate

from app.common.schemas import CamelSchema, PageArgs, Text, UTCDateTime, envelope
from app.models import MACHINE_STATUSES


class ProductSchema(CamelSchema):
    id = fields.Integer()
    name = fields.String()
    code = fields.String()
    description = fields.String(allow_none=True)
    state = fields.String(
        allow_none=True, metadata={"description": "ON (live), OFF (past) or null"}
    )
    latest_job_id = fields.Integer(allow_none=True)
    created_at = UTCDateTime()


class ProductCreateSchema(CamelSchema):
    name = Text(required=True, min_length=1, max_length=200)
    code = Text(required=True, min_length=1, max_length=64)
    description = Text(max_length=5000, allow_none=True, load_default=None)


class ProductListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE

    state = fields.String(validate=validate.OneOf(["ON", "OFF"]), load_default=None)


class MachineSchema(CamelSchema):
    id = fields.Integer()
    name = fields.String()
    code = fields.String()
    status = fields.String()
    created_at = UTCDateTime()
    updated_at = UTCDateTime()


class MachineCreateSchema(CamelSchema):
    name = Text(required=True, min_length=1, max_length=200)
    code = Text(required=True, min_length=1, max_length=64)
    status = fields.String(
        validate=validate.OneOf(["idle", "maintenance", "offline"]), load_default=None
    )


class MachineUpdateSchema(CamelSchema):
    name = Text(min_length=1, max_length=200)
    status = fields.String(validate=validate.OneOf(MACHINE_STATUSES))


class MachineListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE


ProductEnvelope = envelope("product", ProductSchema)
ProductsEnvelope = envelope("products", ProductSchema, many=True, paged=True)
MachineEnvelope = envelope("machine", MachineSchema)
MachinesEnvelope = envelope("machines", MachineSchema, many=True, paged=True)

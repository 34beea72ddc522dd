from marshmallow import EXCLUDE, fields, validate

from app.common.schemas import CamelSchema, PageArgs, Text, UTCDateTime, envelope
from app.models import ROLES


class UserSchema(CamelSchema):
    id = fields.Integer()
    name = fields.String()
    role = fields.String()
    active = fields.Boolean()
    created_at = UTCDateTime()


class UserCreateSchema(CamelSchema):
    name = Text(required=True, min_length=1, max_length=120)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    password = fields.String(
        required=True, validate=validate.Length(min=8, max=200), load_only=True
    )


class TokenSchema(CamelSchema):
    id = fields.Integer()
    name = fields.String()
    prefix = fields.String()
    user_name = fields.Function(lambda t: t.user.name, data_key="userName")
    created_at = UTCDateTime()
    last_used_at = UTCDateTime(allow_none=True)
    revoked_at = UTCDateTime(allow_none=True)


class TokenCreateSchema(CamelSchema):
    name = Text(required=True, min_length=1, max_length=120)
    user_name = Text(required=True, min_length=1, max_length=120)


class ListArgs(PageArgs):
    class Meta:
        unknown = EXCLUDE


class MeSchema(CamelSchema):
    success = fields.Boolean()
    user = fields.Nested(UserSchema)


UserEnvelope = envelope("user", UserSchema)
UsersEnvelope = envelope("users", UserSchema, many=True, paged=True)
TokensEnvelope = envelope("tokens", TokenSchema, many=True, paged=True)
TokenEnvelope = envelope("token", TokenSchema)
NewTokenEnvelope = envelope(
    "token",
    TokenSchema,
    title="NewTokenEnvelope",
    secret=fields.String(metadata={"description": "Shown once"}),
)

"""Schema pieces every area shares: camelCase keys, lenient ids, UTC timestamps, paging."""

from __future__ import annotations

import base64
from datetime import datetime

from marshmallow import Schema, ValidationError, fields, validate


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CamelSchema(Schema):
    """snake_case attributes, camelCase JSON keys; unknown keys are refused by default."""

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        if field_obj.data_key is None:
            field_obj.data_key = camelcase(field_name)


# Ids are INTEGER columns: 32 bits on Postgres. A larger one names nothing, and the driver would
# refuse to send it (a 500), so it is refused up front.
MAX_ID = 2**31 - 1


class Id(fields.Integer):
    """An id: an integer, or a string of digits ("123"), never zero or negative."""

    default_error_messages = {"invalid": "Must be a positive whole number."}

    def __init__(self, **kwargs):
        kwargs.setdefault("validate", validate.Range(min=1, max=MAX_ID))
        super().__init__(strict=False, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or isinstance(value, float):
            raise self.make_error("invalid")
        if isinstance(value, str) and not value.strip().isdigit():
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Count(fields.Integer):
    """A quantity: a JSON integer, no strings, no fractions."""

    def __init__(self, *, minimum: int = 0, **kwargs):
        kwargs.setdefault("validate", validate.Range(min=minimum, max=10**9))
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Text(fields.String):
    """A trimmed string with a length cap, and only characters a database can store: no NUL
    (Postgres refuses it) and no unpaired surrogate ("\\ud800" is valid JSON, but neither
    database can encode it: the driver raises UnicodeEncodeError, a 500)."""

    default_error_messages = {
        "nul": "Must not contain a NUL character.",
        "surrogate": "Must not contain an unpaired surrogate (not valid Unicode text).",
    }

    def __init__(self, *, max_length: int = 200, min_length: int = 0, **kwargs):
        kwargs.setdefault("validate", validate.Length(min=min_length, max=max_length))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if value is not None and "\x00" in value:
            raise self.make_error("nul")
        if value is not None and not value.isascii() and _has_surrogate(value):
            raise self.make_error("surrogate")
        return value.strip() if value is not None else None


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class UTCDateTime(fields.DateTime):
    """ISO 8601 in UTC with a Z, milliseconds included: 2026-11-25T10:00:01.250Z."""

    def _serialize(self, value, attr, obj, **kwargs):
        return iso(value)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a stored time: naive UTC (models.utcnow); twice strftime's speed
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value = raw.split(":", 1)
        # ASCII digits only (str.isdigit() also says yes to "٣" and "²"), and an id we gave out
        if prefix != "id" or not value.isascii() or not value.isdigit():
            raise ValueError
        if not 1 <= int(value) <= MAX_ID:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("Not a cursor this API gave out.") from None


class Cursor(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        return decode_cursor(super()._deserialize(value, attr, data, **kwargs))


class PageArgs(CamelSchema):
    """?limit= (1-500, default 50) and an opaque ?cursor= from the previous page."""

    limit = fields.Integer(
        load_default=50,
        validate=validate.Range(min=1, max=500, error="Must be between 1 and 500."),
    )
    cursor = Cursor(load_default=None)


class ErrorSchema(Schema):
    success = fields.Boolean(dump_default=False)
    error = fields.String()
    details = fields.Dict()


def envelope(
    name: str, inner, *, many: bool = False, paged: bool = False, title: str | None = None, **extra
) -> type[Schema]:
    """A response body schema: {success, <name>: inner, nextCursor?}."""
    attrs = {
        "success": fields.Boolean(dump_default=True),
        name: fields.Nested(inner, many=many),
        **extra,
    }
    if paged:
        attrs["nextCursor"] = fields.String(allow_none=True, dump_default=None)
    return Schema.from_dict(attrs, name=title or f"{name[0].upper()}{name[1:]}Envelope")

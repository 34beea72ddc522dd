"""The date range every analytics call and report takes: ?from=YYYY-MM-DD&to=YYYY-MM-DD."""

from datetime import date, timedelta

from marshmallow import EXCLUDE, ValidationError, fields, post_load

from app.common.schemas import CamelSchema
from app.models import utcnow

DEFAULT_DAYS = 30


class DateRangeArgs(CamelSchema):
    """UTC days, both included; without them the last 30 days up to today."""

    class Meta:
        unknown = EXCLUDE

    MAX_DAYS = 3660

    start = fields.Date(data_key="from", load_default=None, metadata={"example": "2026-11-01"})
    end = fields.Date(data_key="to", load_default=None, metadata={"example": "2026-11-30"})

    @post_load
    def _range(self, data, **_kwargs):
        end: date = data["end"] or (
            data["start"] + timedelta(days=DEFAULT_DAYS - 1) if data["start"] else utcnow().date()
        )
        start: date = data["start"] or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ValidationError("'from' must not be after 'to'.", field_name="from")
        if (end - start).days + 1 > self.MAX_DAYS:
            raise ValidationError(f"At most {self.MAX_DAYS} days at a time.", field_name="to")
        return {"start": start, "end": end}


class AnalyticsFiguresSchema(CamelSchema):
    count = fields.Integer()
    median_seconds = fields.Float(allow_none=True)
    p90_seconds = fields.Float(allow_none=True)


class AnalyticsStageFiguresSchema(AnalyticsFiguresSchema):
    stage = fields.String(allow_none=True)


class AnalyticsMachineFiguresSchema(AnalyticsFiguresSchema):
    machine_id = fields.Integer()
    machine_name = fields.String()


class AnalyticsStagesEnvelope(CamelSchema):
    success = fields.Boolean()
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    stages = fields.List(fields.Nested(AnalyticsStageFiguresSchema))
    machines = fields.List(fields.Nested(AnalyticsMachineFiguresSchema))


class AnalyticsLeadTimesEnvelope(CamelSchema):
    success = fields.Boolean()
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    lead_time = fields.Nested(AnalyticsFiguresSchema)


class AnalyticsOutputRowSchema(CamelSchema):
    date = fields.String()
    machine_id = fields.Integer()
    machine_name = fields.String()
    operator = fields.String()
    quantity = fields.Integer()
    scrap = fields.Integer()
    updates = fields.Integer()


class AnalyticsOutputEnvelope(CamelSchema):
    success = fields.Boolean()
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    output = fields.List(fields.Nested(AnalyticsOutputRowSchema))
    totals = fields.Dict()


class AnalyticsDispatchRowSchema(CamelSchema):
    date = fields.String()
    destination = fields.String(allow_none=True)
    count = fields.Integer()
    quantity = fields.Integer()


class AnalyticsDispatchesEnvelope(CamelSchema):
    success = fields.Boolean()
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    dispatches = fields.List(fields.Nested(AnalyticsDispatchRowSchema))
    totals = fields.Dict()

from marshmallow import EXCLUDE, fields, validate

from app.common.http import not_modified, shared_for_etag, with_etag
from app.common.schemas import CamelSchema
from app.dashboard import bp, service


class DashboardSchema(CamelSchema):
    success = fields.Boolean()
    dashboard = fields.Dict()


class DailyArgs(CamelSchema):
    class Meta:
        unknown = EXCLUDE

    days = fields.Integer(load_default=30, validate=validate.Range(min=1, max=366))


class DaySchema(CamelSchema):
    date = fields.String()
    dispatches = fields.Integer()
    transitions = fields.Integer()


class DailySchema(CamelSchema):
    success = fields.Boolean()
    days = fields.List(fields.Nested(DaySchema))


@bp.get("/dashboard/status")
@bp.response(200, DashboardSchema)
@bp.alt_response(304, description="Nothing changed since the ETag in If-None-Match")
def status():
    """Counters, live and past products, machines, recent activity and stream clients."""
    etag = service.etag()
    cached = not_modified(etag)
    if cached is not None:
        return cached
    figures = shared_for_etag("dashboard", etag, service.figures)
    return with_etag({"success": True, "dashboard": service.with_now(figures)}, etag)


@bp.get("/dashboard/daily")
@bp.arguments(DailyArgs, location="query")
@bp.response(200, DailySchema)
def daily(args):
    """Dispatches and transitions per day for the last ?days= days (default 30)."""
    return {"success": True, "days": service.daily(args["days"])}

from flask import jsonify

from app.analytics import bp, service
from app.analytics.schemas import (
    AnalyticsDispatchesEnvelope,
    AnalyticsLeadTimesEnvelope,
    AnalyticsOutputEnvelope,
    AnalyticsStagesEnvelope,
    DateRangeArgs,
)


def _answer(args, body: dict):
    return jsonify(
        {"success": True, "from": args["start"].isoformat(), "to": args["end"].isoformat(), **body}
    )


@bp.get("/analytics/stages")
@bp.arguments(DateRangeArgs, location="query")
@bp.response(200, AnalyticsStagesEnvelope)
def stages(args):
    """Time spent per stage and per machine (jobs ended in the range): count, median, p90."""
    return _answer(args, service.stages(args["start"], args["end"]))


@bp.get("/analytics/lead-times")
@bp.arguments(DateRangeArgs, location="query")
@bp.response(200, AnalyticsLeadTimesEnvelope)
def lead_times(args):
    """First job start to dispatch, for the dispatches in the range: count, median, p90."""
    return _answer(args, {"leadTime": service.lead_times(args["start"], args["end"])})


@bp.get("/analytics/output")
@bp.arguments(DateRangeArgs, location="query")
@bp.response(200, AnalyticsOutputEnvelope)
def output(args):
    """Output and scrap per day, machine and operator."""
    return _answer(args, service.output(args["start"], args["end"]))


@bp.get("/analytics/dispatches")
@bp.arguments(DateRangeArgs, location="query")
@bp.response(200, AnalyticsDispatchesEnvelope)
def dispatches(args):
    """Dispatches and quantity per day and destination."""
    return _answer(args, service.dispatches(args["start"], args["end"]))

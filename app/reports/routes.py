import os

from flask import Response

from app.analytics.schemas import DateRangeArgs
from app.extensions import db
from app.reports import bp, service

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@bp.get("/reports/<any(transitions, dispatches, output):kind>.<any(csv, xlsx):fmt>")
@bp.arguments(DateRangeArgs, location="query")
@bp.response(
    200,
    description="The file (text/csv or XLSX), streamed; ?from= and ?to= are UTC days",
    content_type="text/csv",
)
def download(args, kind, fmt):
    """Transitions, dispatches or operator output for a date range, as CSV or XLSX."""
    rep = service.report(kind, args["start"], args["end"])
    filename = f"trackopz-{kind}-{args['start'].isoformat()}-to-{args['end'].isoformat()}.{fmt}"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    }
    if fmt == "csv":
        body = service.csv_chunks(rep, db.engine)
        return Response(body, mimetype="text/csv", headers=headers)
    path = service.write_xlsx(rep, db.engine)
    headers["Content-Length"] = str(os.path.getsize(path))
    return Response(service.file_chunks(path), mimetype=XLSX, headers=headers)

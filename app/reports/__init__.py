"""CSV and XLSX downloads of transitions, dispatches and operator output, streamed."""

from app.common.blueprint import Blueprint

bp = Blueprint("reports", __name__, url_prefix="/api", description="CSV and XLSX downloads")

from app.reports import routes  # noqa: E402,F401

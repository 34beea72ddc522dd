"""Analytics over a date range: stage times, lead times, output, dispatches (computed in SQL)."""

from app.common.blueprint import Blueprint

bp = Blueprint(
    "analytics", __name__, url_prefix="/api", description="Figures over a date range, for charts"
)

from app.analytics import indexes, routes  # noqa: E402,F401

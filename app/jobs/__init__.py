from app.common.blueprint import Blueprint

bp = Blueprint(
    "jobs", __name__, url_prefix="/api", description="Jobs, operator output and dispatches"
)

from app.jobs import routes  # noqa: E402,F401

from app.common.blueprint import Blueprint

bp = Blueprint(
    "lifecycle", __name__, url_prefix="/api", description="Live and past products, dispatching"
)

from app.lifecycle import routes  # noqa: E402,F401

from app.common.blueprint import Blueprint

bp = Blueprint(
    "lifecycle", __name__, url_prefix="/api", description="Live and past products, dispatching"
)

from app.lifecycle import routes, service  # noqa: E402,F401 - routes: the views register themselves

bp.record_once(lambda state: service.init_app(state.app))

from app.common.blueprint import Blueprint

bp = Blueprint("dashboard", __name__, url_prefix="/api", description="The factory at a glance")

from app.dashboard import routes  # noqa: E402,F401

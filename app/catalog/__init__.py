from app.common.blueprint import Blueprint

bp = Blueprint("catalog", __name__, url_prefix="/api", description="Products and machines")

from app.catalog import routes  # noqa: E402,F401

"""Sign-in, roles, API tokens and users."""

from flask import Blueprint as FlaskBlueprint

from app.common.blueprint import Blueprint

bp = FlaskBlueprint(
    "auth",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/auth",
)
api_bp = Blueprint("access", __name__, url_prefix="/api", description="Users and API tokens")

from app.auth import routes  # noqa: E402,F401

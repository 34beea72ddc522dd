"""The operator-facing pages: workpanel, dispatch and dashboard (plain HTML, CSS and JS)."""

from flask import Blueprint

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/web",
)

from app.web import routes  # noqa: E402,F401  (registers the views on bp)

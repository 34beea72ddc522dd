"""/api/docs: Swagger UI, its assets served from the swagger-ui-bundle package (no CDN)."""

from pathlib import Path

import swagger_ui_bundle
from flask import Blueprint, render_template, send_from_directory

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)

bp = Blueprint(
    "docs",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/api/docs/static",  # "/static" is the app's own: this file was never found
)


@bp.get("/api/docs")
def docs():
    return render_template("swagger.html")


@bp.get("/api/docs/assets/<path:filename>")
def assets(filename):
    return send_from_directory(ASSETS, filename, max_age=3600)

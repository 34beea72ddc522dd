"""Batches of lifecycle actions and dispatches, each item as the single call would do it."""

from app.common.blueprint import Blueprint

bp = Blueprint(
    "batch",
    __name__,
    url_prefix="/api",
    description="Several lifecycle actions or dispatches at once",
)

from app.batch import routes  # noqa: E402,F401

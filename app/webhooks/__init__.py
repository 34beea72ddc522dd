"""Webhooks: managers register receivers; a deliverer process POSTs them the committed events."""

from flask import Blueprint as FlaskBlueprint
from flask import Flask

from app.common.blueprint import Blueprint
from config import env_float, env_int, env_str

api_bp = Blueprint(
    "webhooks", __name__, url_prefix="/api", description="Webhooks: events POSTed to receivers"
)
bp = FlaskBlueprint(
    "webhook_pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/webhooks",
)


def init_app(app: Flask) -> None:
    """Settings (from the environment unless the app's config has them), blueprints, command."""
    from app.extensions import api
    from app.webhooks.cli import webhooks_cli

    defaults = {
        # Hosts (host or host:port, comma-separated) no webhook may point at; the app's own
        # request host, SERVER_NAME and its port on this machine are always refused.
        "WEBHOOK_BLOCKED_HOSTS": env_str("WEBHOOK_BLOCKED_HOSTS", ""),
        "WEBHOOK_CONNECT_TIMEOUT": env_float("WEBHOOK_CONNECT_TIMEOUT", 3.0),
        "WEBHOOK_READ_TIMEOUT": env_float("WEBHOOK_READ_TIMEOUT", 10.0),
        "WEBHOOK_BACKOFF_SECONDS": env_float("WEBHOOK_BACKOFF_SECONDS", 10.0),
        "WEBHOOK_BACKOFF_CAP_SECONDS": env_float("WEBHOOK_BACKOFF_CAP_SECONDS", 3600.0),
        "WEBHOOK_RETRY_SECONDS": env_float("WEBHOOK_RETRY_SECONDS", 24 * 3600.0),
        "WEBHOOK_POLL_SECONDS": env_float("WEBHOOK_POLL_SECONDS", 1.0),
        "WEBHOOK_LOG_RETENTION_DAYS": env_int("WEBHOOK_LOG_RETENTION_DAYS", 30),
    }
    for key, value in defaults.items():
        app.config.setdefault(key, value)
    api.register_blueprint(api_bp)
    app.register_blueprint(bp)
    app.cli.add_command(webhooks_cli)


from app.webhooks import models, pages, routes  # noqa: E402,F401

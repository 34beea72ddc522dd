"""/healthz (the process answers) and /readyz (its backing services answer)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from app.extensions import broker, db, hub

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"success": True, "status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when the database answers at the migrated head, Redis answers and the hub listens."""
    problems: list[str] = []
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        head = _migration_head()
        current = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if head and current != head:
            problems.append(f"the database is at migration {current}, the code expects {head}")
            checks["migrations"] = "behind"
        else:
            checks["migrations"] = "ok"
    except Exception as err:  # noqa: BLE001 - any failure means not ready
        problems.append(f"the database does not answer ({type(err).__name__})")
        checks["database"] = "down"
    finally:
        db.session.remove()
    if broker.redis is not None:
        try:
            broker.redis.ping()
            checks["redis"] = "ok"
        except Exception as err:  # noqa: BLE001
            problems.append(f"Redis does not answer ({type(err).__name__})")
            checks["redis"] = "down"
        if hub.started and not hub.subscribed:
            problems.append("this worker's Redis subscription is not up")
            checks["subscription"] = "down"
    status = 503 if problems else 200
    body = {
        "success": not problems,
        "status": "ready" if not problems else "not ready",
        "checks": checks,
    }
    if problems:
        body["error"] = "Not ready: " + "; ".join(problems) + "."
    return jsonify(body), status


def _migration_head() -> str | None:
    from alembic.script import ScriptDirectory

    migrate = current_app.extensions["migrate"]
    config = migrate.migrate.get_config(migrate.directory)
    return ScriptDirectory.from_config(config).get_current_head()

"""/healthz (the process answers) and /readyz (this worker can serve: its backing services answer).

Both are public (no sign-in) and answered ahead of the other request hooks (see
app/observability). /readyz checks, in order:

- database: `SELECT 1` answers;
- migrations: the database is at the migration head this code expects (`flask db upgrade` has run);
- redis: PING answers (with REDIS_URL; the in-process broker needs none);
- subscription: this worker's hub is started and holds its Redis subscription (the hub is started
  here if no request has started it yet).

200 `{"success": true, "status": "ready", "checks": {...}}` when all pass; otherwise 503 with
`"error"` saying what is wrong, and `checks` naming each check's state.
"""

from __future__ import annotations

import logging
import time
from functools import cache

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from app.extensions import broker, db, hub
from app.realtime.hub import gevent_patched

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

SUBSCRIBE_WAIT_SECONDS = 1.0


@bp.get("/healthz")
def healthz():
    """The process is up and answers; nothing else is checked."""
    return _no_store(jsonify({"success": True, "status": "ok"}))


@bp.get("/readyz")
def readyz():
    """Ready when the database answers at the migrated head, Redis answers and the hub listens."""
    problems: list[str] = []
    checks: dict[str, str] = {}

    database_up = _check_database(checks, problems)
    if broker.redis is not None:
        try:
            broker.redis.ping()
            checks["redis"] = "ok"
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            log.warning("readyz: Redis does not answer: %s", err)
            problems.append(f"Redis does not answer ({type(err).__name__})")
            checks["redis"] = "down"
    else:
        checks["redis"] = "not used (in-process broker)"
    _check_subscription(checks, problems, database_up)

    body = {
        "success": not problems,
        "status": "ready" if not problems else "not ready",
        "checks": checks,
    }
    if problems:
        body["error"] = "Not ready: " + "; ".join(problems) + "."
    return _no_store(jsonify(body)), 503 if problems else 200


def _check_database(checks: dict, problems: list) -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as err:  # noqa: BLE001
        log.warning("readyz: the database does not answer: %s", err)
        problems.append(f"the database does not answer ({type(err).__name__})")
        checks["database"] = "down"
        checks["migrations"] = "unknown"
        db.session.remove()
        return False
    try:
        head = migration_head()
        current = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if head and current != head:
            problems.append(
                f"the database is at migration {current or 'none'}, the code expects {head} "
                "(run flask db upgrade)"
            )
            checks["migrations"] = "behind"
        else:
            checks["migrations"] = "ok"
    except Exception as err:  # noqa: BLE001 - no alembic_version table: never migrated
        log.warning("readyz: cannot read the migration version: %s", err)
        problems.append("the database has no migrations applied (run flask db upgrade)")
        checks["migrations"] = "missing"
    finally:
        db.session.remove()
    return True


def _check_subscription(checks: dict, problems: list, database_up: bool) -> None:
    if not database_up:
        checks["subscription"] = "unknown"
        return
    try:
        hub.ensure_started()
    except Exception as err:  # noqa: BLE001
        log.warning("readyz: the hub could not start: %s", err)
        problems.append(f"this worker's event hub could not start ({type(err).__name__})")
        checks["subscription"] = "down"
        return
    if broker.redis is None:
        checks["subscription"] = "not used (in-process broker)"
        return
    if not hub.subscribed and gevent_patched():
        # Just started: give the listener a moment to subscribe before saying no.
        import gevent

        deadline = time.monotonic() + SUBSCRIBE_WAIT_SECONDS
        while not hub.subscribed and time.monotonic() < deadline:
            gevent.sleep(0.05)
    if hub.subscribed:
        checks["subscription"] = "ok"
    else:
        problems.append("this worker's Redis subscription is not up")
        checks["subscription"] = "down"


@cache
def _head_for(directory: str) -> str | None:
    from alembic.script import ScriptDirectory

    migrate = current_app.extensions["migrate"]
    config = migrate.migrate.get_config(directory)
    return ScriptDirectory.from_config(config).get_current_head()


def migration_head() -> str | None:
    """The newest migration in this code's migrations/ (read once per process)."""
    return _head_for(str(current_app.extensions["migrate"].directory))


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response

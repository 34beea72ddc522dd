"""gunicorn settings: gevent workers, each with one Redis subscription and its own SSE clients.

No preload: the app must be imported after gevent has patched the worker, never in the master.
"""

import os
import sys

wsgi_app = "wsgi:app"
bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2" if os.environ.get("REDIS_URL") else "1"))
# Streams are long-lived: each open page holds one connection of its worker.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
preload_app = False
timeout = 30
graceful_timeout = 5
keepalive = 75
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# gunicorn 27 opens a control socket under ~/.gunicorn unless told not to.
control_socket_disable = True


def _describe() -> str:
    db = os.environ.get("DATABASE_URL") or "SQLite file instance/trackopz.db"
    if "@" in db:
        db = db.split("://", 1)[0] + "://…@" + db.rsplit("@", 1)[1]
    broker = (
        "Redis " + os.environ["REDIS_URL"].split("@")[-1]
        if os.environ.get("REDIS_URL")
        else ("in-process broker (one worker only)")
    )
    return (
        f"database: {db}; broker: {broker}; {workers} gevent worker(s); listening on http://{bind}"
    )


def on_starting(server):
    if workers > 1 and not os.environ.get("REDIS_URL"):
        sys.exit(
            "TrackOPZ: more than one worker needs REDIS_URL: without Redis, events reach only the "
            "clients of the worker that made them. Set REDIS_URL, or run one worker "
            "(WEB_CONCURRENCY=1)."
        )
    if os.environ.get("DATABASE_URL") and not os.environ.get("SECRET_KEY"):
        from config import MISSING_SECRET

        sys.exit(MISSING_SECRET)
    server.log.info("TrackOPZ — %s", _describe())

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


def _redact(url: str) -> str:
    """A URL without its password (in the netloc or the query), for the start line."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
    query = urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)],
        safe="*",
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _describe(cfg) -> str:
    """Which database, which broker, how many workers, where: from the settings gunicorn uses."""
    if os.environ.get("DATABASE_URL"):
        db = _redact(os.environ["DATABASE_URL"])
    else:
        db = "SQLite file " + os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "instance", "trackopz.db"
        )
    broker = (
        "Redis " + _redact(os.environ["REDIS_URL"])
        if os.environ.get("REDIS_URL")
        else "in-process (one worker only)"
    )
    where = ", ".join(a if a.startswith(("unix:", "fd:")) else "http://" + a for a in cfg.bind)
    return (
        f"database: {db}; broker: {broker}; {cfg.workers} {cfg.worker_class_str} worker(s) "
        f"x {cfg.worker_connections} connections; listening on {where}"
    )


def on_starting(server):
    if server.cfg.workers > 1 and not os.environ.get("REDIS_URL"):
        sys.exit(
            "TrackOPZ: more than one worker needs REDIS_URL: without Redis, events reach only the "
            "clients of the worker that made them. Set REDIS_URL, or run one worker "
            "(WEB_CONCURRENCY=1)."
        )
    if os.environ.get("DATABASE_URL") and not os.environ.get("SECRET_KEY"):
        from config import MISSING_SECRET

        sys.exit(MISSING_SECRET)
    _fresh_metrics_dir()
    server.log.info("TrackOPZ — %s", _describe(server.cfg))


# --- Prometheus multiprocess mode: every worker writes its metrics to files in one directory ---

_OWN_METRICS_DIR = "TRACKOPZ_METRICS_TMPDIR"  # set when the directory is one we made


def _fresh_metrics_dir() -> None:
    """A fresh PROMETHEUS_MULTIPROC_DIR per master start, before any worker forks.

    Given one, its old files are removed (one master per directory); else a temporary one is
    made here and removed at exit.
    """
    import glob
    import tempfile

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given and given != os.environ.get(_OWN_METRICS_DIR):
        os.makedirs(given, exist_ok=True)
        for path in glob.glob(os.path.join(given, "*.db")):
            os.remove(path)
        return
    path = tempfile.mkdtemp(prefix="trackopz-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWN_METRICS_DIR] = path


def post_worker_init(worker):
    """The app is loaded: what it made so far, less its garbage, lives as long as the worker, so
    the collector stops scanning it (a full collection of it paused a worker for 70-110 ms,
    every stream and request of it waiting; 3-20 ms after). Frozen objects are left out of
    gc.get_objects() too, which /api/realtime/stats counts greenlets with: the hub and the
    broker start theirs later. In a gevent worker: with several workers, they take turns
    accepting (_take_turns); and where gunicorn frames HTTP itself, streams may be handed to the
    hub past their first message (app/realtime/routes.py; behind `protocol = "uwsgi"` the proxy
    frames the body)."""
    import gc

    gc.collect()
    gc.freeze()
    from gunicorn.workers import ggevent

    if not isinstance(worker, ggevent.GeventWorker):
        return
    if worker.cfg.workers > 1:
        ggevent.StreamServer = _take_turns(ggevent.StreamServer)
    if getattr(worker.cfg, "protocol", "http") == "http":
        from app.realtime import routes

        routes.HAND_OVER = True


ACCEPT_PAUSE_SECONDS = 0.001


def _take_turns(server_class):
    """gevent's server, made to share a burst of new connections with the other workers.

    All workers wait on one listening socket. gunicorn already has each accept one connection
    per wake-up, but the worker that is running loops back and takes the next one before a
    sleeping one is scheduled: a burst of keep-alive connections (a proxy's upstream pool, a
    client's session) could all go to one worker, which then serves them all while the other
    idles. So a worker that already holds connections lets a moment pass before it takes
    another, and an idler worker gets the next one.
    """

    class TakeTurns(server_class):
        def do_handle(self, *args):
            super().do_handle(*args)
            if self.pool is not None and len(self.pool) > 1 and self._watcher is not None:
                self.stop_accepting()
                self._timer = self.loop.timer(ACCEPT_PAUSE_SECONDS)
                self._timer.start(self._start_accepting_if_started)

    return TakeTurns


def worker_exit(server, worker):
    """End the streams the hub owns with a proper last chunk (browsers reconnect at once)."""
    from app.extensions import hub

    hub.stop()


def child_exit(server, worker):
    """A dead worker's gauges (clients, backlog, pool) no longer count; its counters still do."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get(_OWN_METRICS_DIR)
    if path and path == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import shutil

        shutil.rmtree(path, ignore_errors=True)

"""TrackOPZ: the application factory."""

from __future__ import annotations

import time

from flask import Flask

from config import Config


def create_app(config_class: type[Config] = Config, **overrides) -> Flask:
    """Build the app: settings, extensions, blueprints, error handlers, commands."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config_class)
    app.config.update(overrides)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(app))
    if not app.config.get("SECRET_KEY"):
        from config import secret_key

        app.config["SECRET_KEY"] = secret_key()
    from app.common.jsonprovider import OrjsonProvider

    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind nginx: the client's address (for sign-in limits and logs) is in X-Forwarded-For.
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)
    configure_logger(app)
    register_observability(app)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def _engine_options(app: Flask) -> dict:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {
        "pool_size": app.config["DB_POOL_SIZE"],
        "max_overflow": app.config["DB_MAX_OVERFLOW"],
        # Not on every checkout (a round trip per request): _ping_when_idle.
        "pool_pre_ping": False,
        "pool_timeout": 10,
        # An unreachable host fails in seconds, not after the OS's TCP timeout.
        "connect_args": {"connect_timeout": app.config["DB_CONNECT_TIMEOUT"]},
    }


def register_extensions(app: Flask) -> None:
    from app.auth.guard import init_guard
    from app.common import ratelimit
    from app.common.http import register_request_hooks
    from app.extensions import api, broker, db, hub, limiter, migrate
    from app.realtime.outbox import init_outbox

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    with app.app_context():
        _configure_engine(db.engine)
        _ping_when_idle(db.engine, app.config["DB_PING_AFTER_IDLE_SECONDS"])
    api.init_app(app, spec_kwargs={"info": {"description": "The TrackOPZ HTTP contract."}})
    init_outbox()
    hub.init_app(app)
    broker.init_app(app, hub)
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "tpz_… API token"}
    )
    api.spec.options["security"] = [{"bearer": []}]
    init_guard(app)  # identity first: the limits and the idempotency keys are per user
    app.config["RATELIMIT_STORAGE_URI"] = ratelimit.storage_uri(app.config["RATELIMIT_STORAGE_URI"])
    limiter.init_app(app)
    register_request_hooks(app)
    app.before_request(hub.ensure_started)


def _ping_when_idle(engine, seconds: float) -> None:
    """Ping a pooled connection before it is lent only if it sat unused for `seconds`: the one
    a firewall, a proxy or a restarted server is likely to have dropped. A dead one is replaced
    by the pool (SQLAlchemy's DisconnectionError recipe). Connections in steady use are not
    pinged; app/common/transactions.py says what happens if one of those turns out dead."""
    if engine.dialect.name == "sqlite":
        return
    from sqlalchemy import event, exc

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _lent(dbapi_conn, record, _proxy):
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception:  # psycopg raises some deaths (AdminShutdown) instead of saying so
            alive = False
        if not alive:
            raise exc.DisconnectionError("a pooled connection was found dead")


def _configure_engine(engine) -> None:
    """SQLite: WAL, foreign keys, and BEGIN IMMEDIATE for the service's write transactions."""
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we say BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(
            "PRAGMA synchronous=NORMAL"
        )  # with WAL: durable at checkpoints, fast commits
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def register_blueprints(app: Flask) -> None:
    from app.auth import api_bp as access_bp
    from app.auth import bp as auth_bp
    from app.catalog import bp as catalog_bp
    from app.dashboard import bp as dashboard_bp
    from app.docs import bp as docs_bp
    from app.extensions import api
    from app.health import bp as health_bp
    from app.jobs import bp as jobs_bp
    from app.lifecycle import bp as lifecycle_bp
    from app.realtime.routes import bp as realtime_bp
    from app.web import bp as web_bp

    for bp in (catalog_bp, jobs_bp, lifecycle_bp, realtime_bp, dashboard_bp, access_bp):
        api.register_blueprint(bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(web_bp)
    app.register_blueprint(auth_bp)

    from app import analytics, batch, reports, webhooks

    for bp in (batch.bp, analytics.bp, reports.bp):
        api.register_blueprint(bp)
    webhooks.init_app(app)


def register_errorhandlers(app: Flask) -> None:
    from app.errors import register_errorhandlers as register

    register(app)


def register_commands(app: Flask) -> None:
    from app.cli import register

    register(app)


def configure_logger(app: Flask) -> None:
    """One JSON object a line on stderr (LOG_FORMAT=text for a terminal); see app/observability."""
    from app.observability.logs import configure_logging

    configure_logging(app)


def register_observability(app: Flask) -> None:
    """Request ids, access lines, /metrics, transitions counted and logged at their commit."""
    from app.observability import init_app

    init_app(app)

"""Settings, read from the environment with small typed parsers."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def secret_key() -> str:
    """SECRET_KEY; on the embedded default one is made once and kept in instance/secret_key.

    With DATABASE_URL set (a real deployment, several hosts) it must be given: hosts behind one
    load balancer need the same key, or sign-ins would not survive a hop between them.
    gunicorn.conf.py refuses to start without it; a CLI command gets a throwaway key.
    """
    import secrets

    key = env_str("SECRET_KEY")
    if key:
        return key
    if env_str("DATABASE_URL"):
        return secrets.token_hex(32)
    INSTANCE_DIR.mkdir(exist_ok=True)
    path = INSTANCE_DIR / "secret_key"
    try:
        # Made readable by its owner only from the start, and by one process only: a second one
        # starting at the same moment reads the first one's key rather than writing its own.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    for _ in range(50):  # the other process may be between its open and its write
        key = path.read_text().strip()
        if key:
            return key
        import time

        time.sleep(0.01)
    raise SystemExit(f"TrackOPZ: {path} is empty; delete it or set SECRET_KEY.")


MISSING_SECRET = (
    "TrackOPZ: set SECRET_KEY (the same long random value on every host), e.g. "
    "SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')."
)


def database_url() -> str:
    """DATABASE_URL, normalised to the psycopg 3 driver; a SQLite file under instance/ without it."""
    url = env_str("DATABASE_URL")
    if not url:
        INSTANCE_DIR.mkdir(exist_ok=True)
        return f"sqlite:///{INSTANCE_DIR / 'trackopz.db'}"
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Config:
    SQLALCHEMY_DATABASE_URI = database_url()
    REDIS_URL = env_str("REDIS_URL")
    REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 50)  # per worker, waited for when busy
    SECRET_KEY = env_str("SECRET_KEY")
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    SESSION_COOKIE_NAME = "trackopz_session"
    PERMANENT_SESSION_LIFETIME = env_int("SESSION_HOURS", 12) * 3600
    CORS_ORIGINS = tuple(o.strip() for o in (env_str("CORS_ORIGINS") or "").split(",") if o.strip())
    RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
    RATELIMIT_HEADERS_ENABLED = True
    RATELIMIT_STORAGE_URI = env_str("RATELIMIT_STORAGE_URI") or env_str("REDIS_URL") or "memory://"
    # Redis down must not fail the writes (the contract: a write succeeds without Redis): count
    # in this process meanwhile, and never turn a storage error into a 500.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    LOGIN_RATE_LIMIT_PER_ADDRESS = env_str("LOGIN_RATE_LIMIT_PER_ADDRESS", "30 per minute")
    LOGIN_RATE_LIMIT_PER_USER = env_str("LOGIN_RATE_LIMIT_PER_USER", "5 per minute")
    WRITE_RATE_LIMIT = env_str("WRITE_RATE_LIMIT", "1200 per minute")
    PASSWORD_HASH_METHOD = "scrypt"  # werkzeug's scrypt (N=2**15, r=8, p=1)
    STREAMS_PER_USER = env_int("STREAMS_PER_USER", 20)  # 0: no cap
    # With Redis, how long an open stream counts without being renewed (each worker renews its
    # own every third of this): how long a crashed worker's streams keep counting. See
    # app/auth/streams.py.
    STREAM_LEASE_SECONDS = env_float("STREAM_LEASE_SECONDS", 60.0)
    STREAMS_KEY_PREFIX = env_str("STREAMS_KEY_PREFIX", "trackopz:streams:")
    # How often each worker checks again that its open streams' tokens and users are still let
    # in, and hangs up the others (a revoke reaches the streams already open).
    STREAM_AUTH_RECHECK_SECONDS = env_float("STREAM_AUTH_RECHECK_SECONDS", 15.0)
    # Enough connections for the greenlets of one worker that touch the database at once;
    # streams hold none while they wait.
    DB_POOL_SIZE = env_int("DB_POOL_SIZE", 10)
    DB_MAX_OVERFLOW = env_int("DB_MAX_OVERFLOW", 10)
    DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 5)
    # A pooled connection unused for longer is pinged before it is lent (a firewall or the
    # server may have dropped it meanwhile); one in steady use is not (a round trip each time).
    DB_PING_AFTER_IDLE_SECONDS = env_float("DB_PING_AFTER_IDLE_SECONDS", 10.0)
    # How long a group of transitions waits for a row lock held elsewhere before it gives up
    # with a 503: the worker's other transitions wait behind it meanwhile.
    DB_LOCK_TIMEOUT_SECONDS = env_float("DB_LOCK_TIMEOUT_SECONDS", 5.0)
    # How many proxies (nginx = 1) stand in front and set X-Forwarded-For/-Proto; 0 trusts none.
    TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)
    MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 1024 * 1024)
    SSE_KEEPALIVE_SECONDS = env_float("SSE_KEEPALIVE_SECONDS", 15.0)
    SSE_RETRY_MS = env_int("SSE_RETRY_MS", 3000)
    SSE_CLIENT_QUEUE = env_int("SSE_CLIENT_QUEUE", 1000)
    # The most streams one worker holds (503 past it). gunicorn's worker_connections, read from
    # the same variable, counts requests in progress, and a stream stops being one once the hub
    # owns its connection (app/realtime/hub.py).
    SSE_MAX_STREAMS = env_int("WORKER_CONNECTIONS", 10000)
    SSE_WINDOW = env_int("SSE_WINDOW", 2000)
    SSE_REPLAY_MAX = env_int("SSE_REPLAY_MAX", 10000)
    EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30)
    IDEMPOTENCY_TTL_HOURS = env_int("IDEMPOTENCY_TTL_HOURS", 24)
    REDIS_CHANNEL = env_str("REDIS_CHANNEL", "trackopz:events")
    JSON_SORT_KEYS = False

    API_TITLE = "TrackOPZ"
    API_VERSION = "1.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api"
    OPENAPI_JSON_PATH = "openapi.json"


class TestConfig(Config):
    """The test suite's settings; tests/conftest.py points the database at a fresh one."""

    TESTING = True
    SECRET_KEY = "test-only-secret"
    SSE_KEEPALIVE_SECONDS = 0.5
    PASSWORD_HASH_METHOD = "scrypt:1024:8:1"  # fast sign-ins in tests; production keeps scrypt's
    RATELIMIT_STORAGE_URI = "memory://"

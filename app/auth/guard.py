"""Who is asking, and may they: sessions and bearer tokens, roles, CSRF, security headers."""

from __future__ import annotations

import hashlib
import secrets
from functools import wraps
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from sqlalchemy import bindparam, select
from werkzeug.exceptions import Forbidden

from app.auth import service
from app.common.transactions import read_alone
from app.models import User

PUBLIC_PATHS = frozenset({"/login", "/healthz", "/readyz", "/metrics", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token() -> str:
    token = session.get("csrf")
    if token is None:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _is_public() -> bool:
    return request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES)


def load_identity() -> None:
    """Find the user of this request; refuse anonymous ones outside the public paths."""
    g.user = None
    g.auth = None
    if request.method == "OPTIONS":
        # A CORS preflight carries no credentials; Flask answers it with the allowed methods and
        # runs no view, and `cors()` adds the headers for an allowlisted origin.
        return None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        found = service.token_and_user(header[7:].strip())
        if found is None:
            if _is_public():
                return None
            abort(401, description="The API token is not valid or was revoked.")
        g.token_id = found.token_id
        g.user, g.auth = service.SignedIn._make(found[:_SHOWN]), "token"
    elif session.get("uid") is not None:
        user = read_alone(_SESSION_USER, {"uid": session["uid"]})
        if user is not None and user.active and session.get("ver") == session_version(user):
            g.user, g.auth = service.SignedIn._make(user[:_SHOWN]), "session"
        else:
            session.clear()
    if g.user is not None:
        g.actor = g.user.name
        if g.auth == "session" and request.method in WRITE_METHODS and not _is_public():
            _check_csrf()
        return None
    if _is_public():
        return None
    if request.path.startswith("/api/") and request.endpoint != "docs.docs":
        abort(401)
    # A page (the API's own docs page too: it is opened in a browser) goes to the sign-in.
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


# The same columns as a token's sign-in (service.token_and_user), and what session_version needs;
# g.user gets the first _SHOWN of them, never the password hash.
_SHOWN = len(service.USER_COLUMNS)
_SESSION_USER = select(*service.USER_COLUMNS, User.__table__.c.password_hash).where(
    User.__table__.c.id == bindparam("uid")
)


def credential() -> tuple | None:
    """What this request was let in with, to check again later (service.still_valid): a token
    can be revoked and a user deactivated while a stream they opened stays open."""
    if g.get("auth") == "token":
        return ("token", g.token_id)
    if g.get("auth") == "session":
        return ("session", g.user.id, session.get("ver"))
    return None


def session_version(user: User) -> str:
    """Changes when the password changes, so old cookies stop working.

    A digest of the hash, never a piece of it: the cookie is signed, not encrypted, so anyone
    holding it can read what it carries.
    """
    return hashlib.sha256(b"session-version\0" + user.password_hash.encode()).hexdigest()[:16]


def start_session(user: User) -> None:
    session.clear()
    session["uid"] = user.id
    session["ver"] = session_version(user)
    session.permanent = True
    csrf_token()


def _check_csrf() -> None:
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    expected = session.get("csrf")
    if not sent or not expected or not secrets.compare_digest(sent, expected):
        raise Forbidden(
            "The form is stale or came from another site (CSRF check failed); reload the page."
        )


def require_role(role: str) -> None:
    """Stop here with 403 unless the signed-in user's role includes `role`."""
    user = g.get("user")
    if user is None:
        abort(401)
    if not service.allows(user.role, role):
        raise Forbidden(f"Your role ({user.role}) cannot do this; it needs {role}.")


def requires(role: str):
    """Decorator form of require_role."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            require_role(role)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def security_headers(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        # Swagger UI sets style attributes and data: images; every page of ours needs neither.
        loose = request.path == "/api/docs"
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; "
            + ("style-src 'self' 'unsafe-inline'; img-src 'self' data:; " if loose else "")
            + "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
            "frame-ancestors 'none'",
        )
        headers.setdefault("X-Frame-Options", "DENY")
    return response


def cors(response):
    """Off unless CORS_ORIGINS names the origin."""
    origin = request.headers.get("Origin")
    allowed = current_app.config.get("CORS_ORIGINS") or ()
    if allowed:
        response.vary.add("Origin")  # the answer depends on the origin: caches must know
    if origin and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-CSRF-Token"
        )
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


def safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect a sign-in to another host."""
    if not target:
        return url_for("web.index")
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        # Browsers read "\\" as "/" ("/\\evil.example" is "//evil.example") and drop tabs and
        # newlines ("/\t/evil.example" too): no backslash, no control character, no space.
        or "\\" in target
        or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in target)
    ):
        return url_for("web.index")
    return target


def init_guard(app: Flask) -> None:
    app.before_request(load_identity)
    app.after_request(security_headers)
    app.after_request(cors)

    @app.context_processor
    def identity_context():
        return {"csrf_token": csrf_token(), "current_user": g.get("user")}

from flask import flash, g, redirect, render_template, request, session, url_for
from flask_limiter.util import get_remote_address
from sqlalchemy import select

from app.auth import api_bp, bp, service
from app.auth.guard import csrf_token, requires, safe_next, start_session
from app.auth.schemas import (
    ListArgs,
    MeSchema,
    NewTokenEnvelope,
    TokenCreateSchema,
    TokenEnvelope,
    TokensEnvelope,
    UserCreateSchema,
    UserEnvelope,
    UsersEnvelope,
)
from app.common.http import page
from app.extensions import limiter
from app.models import ApiToken, User


def _login_name() -> str:
    return "login-user:" + (request.form.get("name") or "").strip().lower()


def _failed(response) -> bool:
    return response.status_code != 302


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(
    lambda: limiter_setting("LOGIN_RATE_LIMIT_PER_ADDRESS"),
    key_func=get_remote_address,
    methods=["POST"],
    deduct_when=_failed,
    scope="login-address",
)
@limiter.limit(
    lambda: limiter_setting("LOGIN_RATE_LIMIT_PER_USER"),
    key_func=_login_name,
    methods=["POST"],
    deduct_when=_failed,
    scope="login-user",
)
def login():
    if request.method == "GET":
        return render_template("auth/login.html", next=request.args.get("next", ""))
    sent = request.form.get("csrf_token", "")
    if not sent or sent != session.get("csrf"):
        return render_template(
            "auth/login.html",
            error="The sign-in form expired; please try again.",
            next=request.form.get("next", ""),
        ), 400
    user = service.authenticate(
        request.form.get("name", "").strip(), request.form.get("password", "")
    )
    if user is None:
        return render_template(
            "auth/login.html",
            error="Wrong name or password.",
            next=request.form.get("next", ""),
            name=request.form.get("name", ""),
        ), 401
    start_session(user)
    return redirect(safe_next(request.form.get("next")))


@bp.errorhandler(429)
def too_many_attempts(err):
    page = render_template(
        "auth/login.html",
        error="Too many sign-in attempts; wait a minute and try again.",
        next=request.form.get("next", ""),
    )
    return page, 429, {"Retry-After": "60"}


@bp.post("/logout")
def logout():
    session.clear()
    csrf_token()
    flash("You are signed out.")
    return redirect(url_for("auth.login"))


@bp.get("/tokens")
@requires("manager")
def tokens_page():
    return render_template("auth/tokens.html", page="tokens")


def limiter_setting(name: str) -> str:
    from flask import current_app

    return current_app.config[name]


# --- API --------------------------------------------------------------------------------------


@api_bp.get("/me")
@api_bp.response(200, MeSchema)
def me():
    """The signed-in user."""
    return {"success": True, "user": g.user}


@api_bp.get("/users")
@requires("manager")
@api_bp.arguments(ListArgs, location="query")
@api_bp.response(200, UsersEnvelope)
def list_users(args):
    """Users (managers only)."""
    users, cursor = page(select(User), User.id, limit=args["limit"], cursor=args["cursor"])
    return {"users": users, "nextCursor": cursor}


@api_bp.post("/users")
@requires("manager")
@api_bp.arguments(UserCreateSchema)
@api_bp.response(201, UserEnvelope)
def create_user(body):
    """Add a user (managers only)."""
    return {"user": service.create_user(**body)}


@api_bp.get("/tokens")
@requires("manager")
@api_bp.arguments(ListArgs, location="query")
@api_bp.response(200, TokensEnvelope)
def list_tokens(args):
    """API tokens, newest first (managers only); the secrets themselves are never shown again."""
    tokens, cursor = page(select(ApiToken), ApiToken.id, limit=args["limit"], cursor=args["cursor"])
    return {"tokens": tokens, "nextCursor": cursor}


@api_bp.post("/tokens")
@requires("manager")
@api_bp.arguments(TokenCreateSchema)
@api_bp.response(201, NewTokenEnvelope)
def create_token(body):
    """Create an API token for a user (managers only); `secret` is shown this once."""
    token, plain = service.create_token(user_name=body["user_name"], name=body["name"])
    return {"token": token, "secret": plain}


@api_bp.delete("/tokens/<int:token_id>")
@requires("manager")
@api_bp.response(200, TokenEnvelope)
def revoke_token(token_id):
    """Revoke a token at once, on every worker (managers only)."""
    return {"token": service.revoke_token(token_id)}

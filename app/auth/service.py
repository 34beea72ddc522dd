"""Users, passwords and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections import namedtuple
from functools import cache

from flask import current_app
from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.common.transactions import read_alone
from app.errors import Conflict, InvalidInput, NotFound
from app.extensions import db
from app.models import ROLES, ApiToken, User, utcnow

ROLE_RANK = {"operator": 1, "dispatcher": 2, "manager": 3}
TOKEN_PREFIX = "tpz_"


def _hash_method() -> str:
    """PASSWORD_HASH_METHOD: scrypt with werkzeug's parameters (the test suite's are cheaper)."""
    return current_app.config.get("PASSWORD_HASH_METHOD") or "scrypt"


@cache
def _dummy_hash(method: str) -> str:
    """A hash to check against when the user does not exist, so timing does not tell."""
    return generate_password_hash("not-a-real-password", method=method)


def allows(role: str, needed: str) -> bool:
    return ROLE_RANK.get(role, 0) >= ROLE_RANK[needed]


def create_user(*, name: str, role: str, password: str) -> User:
    """Add a user; the password is kept only as a scrypt hash."""
    if role not in ROLES:
        raise InvalidInput(f"Role must be one of {', '.join(ROLES)}.")
    if not 1 <= len(name) <= 120 or any(ord(ch) < 0x20 for ch in name) or name != name.strip():
        raise InvalidInput("The name must have 1 to 120 characters, no control characters.")
    if len(password) < 8:
        raise InvalidInput("The password must have at least 8 characters.")
    if db.session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"A user named {name!r} already exists.")
    user = User(
        name=name, role=role, password_hash=generate_password_hash(password, method=_hash_method())
    )
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:  # the same name, made at the same moment
        db.session.rollback()
        raise Conflict(f"A user named {name!r} already exists.") from None
    return user


def authenticate(name: str, password: str) -> User | None:
    if "\x00" in name or len(name) > 120:  # no such user; and Postgres refuses a NUL
        check_password_hash(_dummy_hash(_hash_method()), password)
        return None
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None or not user.active:
        check_password_hash(_dummy_hash(_hash_method()), password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(*, user_name: str, name: str) -> tuple[ApiToken, str]:
    """A new token for `user_name`; the plain token is returned once and never stored."""
    user = db.session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise NotFound(f"No user named {user_name!r}.")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, token_hash=_digest(plain), prefix=plain[:10])
    db.session.add(token)
    db.session.commit()
    return token, plain


def revoke_token(token_id: int) -> ApiToken:
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"No token with id {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()
    return token


def token_and_user(plain: str) -> Row | None:
    """The token (not revoked) and its active user, as one plain row: the user's USER_COLUMNS,
    and the token's token_id; last-used time kept to the minute.

    A row, not ORM objects: it is read for every API request, and g.user only needs these
    values (an ORM object would also be expired, and read again, by the view's first rollback).
    """
    if not plain.startswith(TOKEN_PREFIX) or len(plain) > 200:
        return None
    found = read_alone(_TOKEN_AND_USER, {"digest": _digest(plain)})
    if found is None:
        return None
    now = utcnow()
    # Keep last-used current to the minute without a write on every request.
    if found.last_used_at is None or (now - found.last_used_at).total_seconds() > 60:
        db.session.execute(update(_T).where(_T.c.id == found.token_id).values(last_used_at=now))
        db.session.commit()
    return found


_T, _U = ApiToken.__table__, User.__table__
# What a signed-in request knows of its user (g.user, as a SignedIn): what UserSchema shows.
USER_COLUMNS = (_U.c.id, _U.c.name, _U.c.role, _U.c.active, _U.c.created_at)
SignedIn = namedtuple("SignedIn", [c.name for c in USER_COLUMNS])
_TOKEN_AND_USER = (
    select(*USER_COLUMNS, _T.c.id.label("token_id"), _T.c.last_used_at)
    .join(_U, _U.c.id == _T.c.user_id)
    .where(_T.c.token_hash == bindparam("digest"), _T.c.revoked_at.is_(None), _U.c.active)
)


def still_valid(credentials: list[tuple]) -> set[tuple]:
    """Which of these credentials (see guard.credential()) would still be let in now."""
    token_ids = {c[1] for c in credentials if c[0] == "token"}
    user_ids = {c[1] for c in credentials if c[0] == "session"}
    valid: set[tuple] = set()
    if token_ids:
        rows = db.session.execute(
            select(ApiToken.id)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id.in_(token_ids), ApiToken.revoked_at.is_(None), User.active)
        )
        valid |= {("token", row.id) for row in rows}
    if user_ids:
        from app.auth.guard import session_version

        for user in db.session.scalars(select(User).where(User.id.in_(user_ids), User.active)):
            valid.add(("session", user.id, session_version(user)))
    return valid

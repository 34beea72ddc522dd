"""Unbound extension objects; create_app binds them."""

from flask import g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData

from app.common.schemas import ErrorSchema
from app.realtime.broker import Broker
from app.realtime.hub import Hub

naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=naming))
migrate = Migrate(compare_type=True, render_as_batch=True)


class TrackOPZApi(Api):
    """flask-smorest, documenting errors in the contract's envelope rather than its own shape."""

    ERROR_SCHEMA = ErrorSchema


api = TrackOPZApi()
broker = Broker()
hub = Hub()


def _client_key() -> str:
    """Limits count per signed-in user (and so per token), else per address."""
    user = g.get("user")
    return f"user:{user.id}" if user is not None else get_remote_address()


def _not_a_write() -> bool:
    return request.method not in ("POST", "PUT", "PATCH", "DELETE")


# WRITE_RATE_LIMIT counts every write of one user together (an application limit): as default
# limits, each endpoint would have had a budget of its own.
limiter = Limiter(
    key_func=_client_key,
    application_limits=[lambda: _setting("WRITE_RATE_LIMIT")],
    application_limits_exempt_when=_not_a_write,
)
# Only writes are limited (the sign-in form's limits too are on its POST), so a read skips the
# limiter altogether instead of resolving and parsing every limit to find each exempt.
limiter.request_filter(_not_a_write)


def _setting(name: str) -> str:
    from flask import current_app

    return current_app.config[name]

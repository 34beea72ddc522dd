"""flask-smorest, told to answer validation errors with 400 as the contract says (not 422)."""

from flask import g
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser


class Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = Parser()


def current_actor() -> str | None:
    """Who is acting: the signed-in user's (or token's user's) name, never the request body."""
    return getattr(g, "actor", None)

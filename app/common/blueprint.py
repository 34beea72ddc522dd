"""flask-smorest, told to answer validation errors with 400 as the contract says (not 422)."""

import json

from flask import g
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser


class Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req):
        """A body nested too deep for the decoder is invalid JSON (a 400), not a RecursionError."""
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise json.JSONDecodeError("The JSON is nested too deeply.", "", 0) from None


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = Parser()


def current_actor() -> str | None:
    """Who is acting: the signed-in user's (or token's user's) name, never the request body."""
    return getattr(g, "actor", None)

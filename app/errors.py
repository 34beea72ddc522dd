"""One error path: domain errors and HTTP errors become the contract's JSON envelope."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A rule of the shop floor said no; `status` is the HTTP code the view answers with."""

    status = 400

    def __init__(self, message: str, *, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    status = 400


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class ServiceUnavailable(DomainError):
    status = 503


SENTENCES = {
    400: "The request is not valid.",
    401: "Sign in first.",
    403: "Your role does not allow this.",
    404: "Nothing is found at this address.",
    405: "This method is not allowed here.",
    413: "The request body is too large.",
    415: "Send the body as JSON (Content-Type: application/json).",
    422: "The request is not valid.",
    429: "Too many requests; try again shortly.",
    500: "Something went wrong on the server.",
    503: "A backing service is unavailable; try again shortly.",
}


def error_body(status: int, message: str, details: dict | None = None) -> dict:
    body = {"success": False, "error": message}
    if details:
        body["details"] = details
    return body


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz")


def register_errorhandlers(app: Flask) -> None:
    """Answer every error on /api/* with the envelope, keeping the code and headers."""

    @app.errorhandler(DomainError)
    def domain_error(err: DomainError):
        return jsonify(error_body(err.status, err.message, err.details)), err.status

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if not _wants_json():
            return err
        status = err.code or 500
        details = None
        message = SENTENCES.get(status, err.description or "The request failed.")
        data = getattr(err, "data", None)  # webargs puts the validation messages here
        if isinstance(data, dict) and "messages" in data:
            status = 400
            details = _flatten_messages(data["messages"])
            if details.get("json") == "Invalid JSON body.":
                details, message = None, "The body is not valid JSON."
            else:
                message = _summary(details) or SENTENCES[400]
        elif status == 429 and getattr(err, "limit", None) is not None:  # Flask-Limiter's
            message = f"Too many requests ({err.description}); try again shortly."
        elif err.description and err.description != type(err).description:
            message = err.description  # a sentence the app wrote, not werkzeug's stock text
        response = jsonify(error_body(status, message, details))
        response.status_code = status
        for name, value in err.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        if isinstance(err, HTTPException):  # pragma: no cover - handled above
            return http_error(err)
        if _is_bad_value(err):
            # A value the database (or the arithmetic on it) cannot hold: a NUL in a text, a
            # number or a date out of range. The request's fault, though a field should have
            # said so first; logged so that one can be added.
            log.warning("a value out of range on %s %s", request.method, request.path, exc_info=err)
            if _wants_json():
                return jsonify(error_body(400, BAD_VALUE)), 400
            return BadRequest(BAD_VALUE)
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_json():
            return InternalServerError()
        from app.realtime.outbox import is_unavailable_error

        if is_unavailable_error(err):
            return jsonify(error_body(503, SENTENCES[503])), 503
        return jsonify(error_body(500, SENTENCES[500])), 500


BAD_VALUE = "A value in the request is out of range or cannot be stored (e.g. a NUL character)."


def _is_bad_value(err: Exception) -> bool:
    from sqlalchemy.exc import DataError

    return isinstance(err, (DataError, OverflowError))


def _flatten_messages(messages: dict) -> dict:
    """webargs nests messages by location ({"json": {...}}); the contract wants field: message."""
    out: dict = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            for field, msgs in fields.items():
                out[field] = _first(msgs)
        else:
            out[location] = _first(fields)
    return out


def _first(msgs):
    if isinstance(msgs, list) and msgs and all(isinstance(m, str) for m in msgs):
        return " ".join(msgs)
    if isinstance(msgs, dict):
        return {k: _first(v) for k, v in msgs.items()}
    return msgs


def _summary(details: dict) -> str:
    parts = []
    for field, msg in details.items():
        if field == "_schema":
            parts.append(msg if isinstance(msg, str) else "The body is not valid.")
        elif isinstance(msg, str):
            parts.append(f"{field}: {msg}")
        else:
            parts.append(f"{field}: not valid")
    return ("Invalid input — " + "; ".join(parts)) if parts else ""

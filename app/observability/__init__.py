"""Production plumbing: request ids, one access line per request, Prometheus metrics.

`init_app(app)` adds:

- a request id per request: the client's `X-Request-ID` when it is a sane token (letters, digits,
  `.`, `_`, `:`, `-`; at most 128), else a new one; echoed in the response's `X-Request-ID` and in
  every log line written while the request is served;
- one access line per request (logger `trackopz.access`): method, path, status, duration_ms,
  user, endpoint. The event stream, which lasts as long as the page is open, gets a line when it
  opens and one when it closes (with how long it was open) instead;
- request count and latency by Flask endpoint (never the raw path), method and status;
- `GET /metrics` (Prometheus text format);
- the commit hooks of audit.py (transitions and events counted and logged).

The probes (`/healthz`, `/readyz`) and `/metrics` are answered by the first before-request hook,
ahead of the others (sign-in, idempotency, starting the hub): a load balancer's probe must work
without a session, and a database that is down must give `/readyz`'s own 503, not another error.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Blueprint, Flask, Response, current_app, g, request

from app.observability import metrics

access_log = logging.getLogger("trackopz.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
PROBE_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "observability.metrics"})
STREAM_MIMETYPE = "text/event-stream"
STREAM_END = "trackopz.stream_end"  # environ: logs the end of the stream (once)


def stream_ended(environ: dict) -> None:
    """Log the end of the stream of `environ`'s request, unless it was logged already or the
    hub took it over (it pops the hook, and calls it when the connection ends)."""
    hook = environ.pop(STREAM_END, None)
    if hook is not None:
        hook()


bp = Blueprint("observability", __name__)


@bp.get("/metrics", endpoint="metrics")
def metrics_view():
    """Prometheus text format; keep it to your network (see docs/DEPLOYMENT.md)."""
    body, content_type = metrics.exposition(request.headers.get("Accept"))
    response = Response(body, headers={"Content-Type": content_type})
    response.headers["Cache-Control"] = "no-store"
    return response


def _request_id() -> str:
    sent = request.headers.get(REQUEST_ID_HEADER, "").strip()
    return sent if _SANE_ID.fullmatch(sent) else uuid.uuid4().hex


def _begin() -> Response | None:
    g.request_id = _request_id()
    g.request_started = time.perf_counter()
    if request.endpoint in PROBE_ENDPOINTS and request.method in ("GET", "HEAD"):
        view = current_app.view_functions[request.endpoint]
        return current_app.make_response(view(**(request.view_args or {})))
    return None


def _fields(response: Response, seconds: float) -> dict:
    fields = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 1),
        "user": g.get("actor"),
        "endpoint": request.endpoint or "unmatched",
        "remote": request.remote_addr,
    }
    if request.query_string:
        fields["query"] = request.query_string.decode("latin-1")
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        fields["forwarded_for"] = forwarded
    return fields


def _finish(response: Response) -> Response:
    started = g.get("request_started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    request_id = g.get("request_id") or _request_id()
    response.headers[REQUEST_ID_HEADER] = request_id
    endpoint = request.endpoint or "unmatched"
    metrics.count_request(endpoint, request.method, response.status_code, seconds)
    fields = _fields(response, seconds)
    if response.mimetype == STREAM_MIMETYPE and response.is_streamed:
        access_log.info("stream opened: %s %s", request.method, request.path, extra=fields)
        opened = time.perf_counter()

        def closed():
            open_for = time.perf_counter() - opened
            access_log.info(
                "stream closed after %.1fs: %s %s",
                open_for,
                fields["method"],
                fields["path"],
                extra={
                    **fields,
                    "request_id": request_id,
                    "duration_ms": round((seconds + open_for) * 1000, 1),
                },
            )

        # A stream may outlive its request (the hub takes a stream's connection over, see
        # app/realtime/routes.py): whoever ends it last runs this, once.
        request.environ[STREAM_END] = closed
        environ = request.environ
        response.call_on_close(lambda: stream_ended(environ))
    else:
        if endpoint in PROBE_ENDPOINTS:  # polled every few seconds: quiet unless failing
            level = logging.DEBUG if response.status_code < 400 else logging.WARNING
        elif response.status_code >= 500:
            level = logging.ERROR
        else:
            level = logging.INFO
        access_log.log(
            level,
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            fields["duration_ms"],
            extra=fields,
        )
    metrics.sync.soon()
    return response


def init_app(app: Flask) -> None:
    from app.observability.audit import init_audit

    init_audit()
    app.register_blueprint(bp)
    # First in, so every later hook (and its errors) happens inside a request with an id.
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)
    # after_request hooks run last-registered first: put first, this one runs last and sees the
    # response the others made.
    app.after_request_funcs.setdefault(None, []).insert(0, _finish)
    metrics.sync.bind(app)

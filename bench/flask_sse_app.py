"""The baseline for the side-by-side: flask-sse's blueprint, served like TrackOPZ (gunicorn gevent).

Run from its own venv (bench/.venv-flask-sse), never the project's. Same paths as TrackOPZ: the
stream at /api/live-products/dispatchable/stream, and a publish endpoint that sends the events it
is given, each with its id, as flask-sse is documented to be used (`sse.publish(dict, id=...)`).
"""

import os

from flask import Flask, jsonify, request
from flask_sse import sse

CHANNEL = os.environ.get("FLASK_SSE_CHANNEL", "sse")

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ.get("FLASK_SSE_REDIS_URL", "redis://127.0.0.1:6379/0")
app.register_blueprint(sse, url_prefix="/api/live-products/dispatchable/stream")


@app.get("/healthz")
def healthz():
    return jsonify({"ok": True})


@app.post("/publish")
def publish():
    for event in request.get_json()["events"]:
        sse.publish(event["data"], id=event["id"], channel=CHANNEL)
    return jsonify({"success": True})

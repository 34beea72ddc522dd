"""`flask --app wsgi webhooks run [--once]`: the deliverer process (Procfile: worker)."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from app.extensions import db
from app.models import utcnow

log = logging.getLogger(__name__)

webhooks_cli = AppGroup("webhooks", help="Webhook delivery.")

PRUNE_EVERY_SECONDS = 3600


@contextmanager
def single_deliverer_on_sqlite():
    """SQLite lives on one host: a file lock beside the database keeps to one deliverer there.

    On Postgres several deliverers may run; per-webhook advisory locks keep them apart.
    """
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    with open(url.database + ".webhooks-lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(
                "Another webhook deliverer is running on this SQLite database."
            ) from None
        yield


def _sleep_for(wake_at: datetime | None) -> float:
    idle = float(current_app.config["WEBHOOK_POLL_SECONDS"])
    if wake_at is None:
        return idle
    return max(0.0, min(idle, (wake_at - utcnow()).total_seconds()))


@webhooks_cli.command("run")
@click.option("--once", is_flag=True, help="One pass over the webhooks, then exit.")
def run(once: bool) -> None:
    """Deliver committed events to the webhooks, retrying with backoff; runs until stopped."""
    from app.webhooks.deliver import deliver_pending, new_http, prune_log

    http = new_http()
    with single_deliverer_on_sqlite():
        if once:
            result = deliver_pending(http)
            click.echo(
                f"Sent {result.sent}, failed {result.failed} (will retry), gave up on {result.gave_up}."
            )
            return
        if not os.environ.get("LOG_LEVEL"):  # a flask command logs WARNING and up; this one runs on
            logging.getLogger("app.webhooks").setLevel(logging.INFO)
        log.info("webhook deliverer started")
        pruned_at = 0.0
        while True:
            try:
                if time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                    pruned_at = time.monotonic()
                    prune_log()
                result = deliver_pending(http)
                if result.worked:
                    continue
                time.sleep(_sleep_for(result.wake_at))
            except KeyboardInterrupt:
                return
            except Exception:
                try:
                    db.session.rollback()
                except Exception:  # the database is away: the next pass finds out again
                    pass
                log.exception("webhook delivery pass failed; trying again shortly")
                time.sleep(float(current_app.config["WEBHOOK_POLL_SECONDS"]) * 5)

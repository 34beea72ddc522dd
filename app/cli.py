"""Commands: `flask --app wsgi seed-demo`, `flask --app wsgi events prune`."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask, current_app
from sqlalchemy import delete, func, select

from app.extensions import db


def register(app: Flask) -> None:
    app.cli.add_command(seed_demo)
    app.cli.add_command(events)


@click.command("seed-demo")
def seed_demo():
    """Load the demo factory into an empty database."""
    from app import demo

    if not demo.is_empty():
        click.echo("The database already has products; demo data not loaded.")
        return
    counts = demo.load()
    click.echo(
        "Loaded the demo factory: {products} products ({live} live, {dispatched} dispatched, "
        "{past} moved to past) on 12 machines.".format(**counts)
    )


@click.group()
def events():
    """The event log the stream replays from."""


@events.command("prune")
@click.option("--days", type=int, default=None, help="Keep this many days (EVENT_RETENTION_DAYS).")
def prune(days):
    """Delete events older than the retention; clients further behind get a resync."""
    from app.common.http import prune_idempotency_keys
    from app.models import Event, utcnow

    days = current_app.config["EVENT_RETENTION_DAYS"] if days is None else days
    cutoff = utcnow() - timedelta(days=days)
    newest = db.session.scalar(select(func.max(Event.id)))
    # The newest event always stays: ids must keep rising after a restart.
    stmt = delete(Event).where(Event.created_at < cutoff)
    if newest is not None:
        stmt = stmt.where(Event.id < newest)
    removed = db.session.execute(stmt).rowcount
    db.session.commit()
    keys = prune_idempotency_keys()
    click.echo(f"Pruned {removed} event(s) older than {days} day(s); {keys} idempotency key(s).")

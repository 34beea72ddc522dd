"""Commands: `flask --app wsgi seed-demo`, `flask --app wsgi events prune`."""

from __future__ import annotations

from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import delete, func, select

from app.extensions import db


def register(app: Flask) -> None:
    app.cli.add_command(seed_demo)
    app.cli.add_command(events)
    app.cli.add_command(users)
    app.cli.add_command(tokens)


@click.command("seed-demo")
@click.option(
    "--products",
    type=click.IntRange(3, 10_000),
    default=24,
    show_default=True,
    help="How many products to put on the line.",
)
@with_appcontext
def seed_demo(products):
    """Load the demo factory into an empty database."""
    from app import demo

    if demo.has_no_users():
        demo.load_users()
    if demo.is_empty():
        counts = demo.load(products=products)
        click.echo(
            "Loaded the demo factory: {products} products ({live} live, {dispatched} dispatched, "
            "{past} moved to past) on 12 machines.".format(**counts)
        )
    else:
        click.echo("The database already has products; demo data not loaded.")
    if demo.has_demo_users():
        click.echo(f"Sign in with one of the demo users (password: {demo.DEMO_PASSWORD}):")
        for name, role in demo.USERS:
            click.echo(f"  {name:<8} {role}")


@click.group(cls=AppGroup)
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


@click.group(cls=AppGroup)
def users():
    """Users who sign in."""


@users.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["operator", "dispatcher", "manager"]), required=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Asked for when not given.",
)
def create_user(name, role, password):
    """Add a user with a role."""
    from app.auth import service
    from app.errors import DomainError

    try:
        user = service.create_user(name=name, role=role, password=password)
    except DomainError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"Created {user.role} {user.name}.")


@click.group(cls=AppGroup)
def tokens():
    """API tokens for scripts and other services."""


@tokens.command("create")
@click.option("--user", "user_name", required=True, help="The user the token acts as.")
@click.option("--name", "label", default="cli", show_default=True, help="A label for the token.")
def create_token(user_name, label):
    """Make a token; it is printed once, as the last line."""
    from app.auth import service
    from app.errors import DomainError

    try:
        token, plain = service.create_token(user_name=user_name, name=label)
    except DomainError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"Token {token.id} ({token.name}) for {user_name}; it is not shown again:")
    click.echo(plain)


@tokens.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id):
    """Revoke a token at once."""
    from app.auth import service
    from app.errors import DomainError

    try:
        service.revoke_token(token_id)
    except DomainError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"Revoked token {token_id}.")

"""Fixtures of the ops tests: the suite's app, left so that the next test's setup can empty it."""

from __future__ import annotations

import pytest
from sqlalchemy import text


@pytest.fixture
def app(app):
    # migrations/env.py calls logging.config.fileConfig() without disable_existing_loggers=False,
    # so the suite's in-process `upgrade()` silently disables every logger that already exists,
    # ours included. (Served apps never run it in-process; `flask db upgrade` is its own process.)
    import logging

    for name in ("trackopz.access", "trackopz.transitions"):
        logging.getLogger(name).disabled = False
    # The in-process broker whatever REDIS_URL says: a hub's Redis listener is a greenlet that
    # only runs under gevent (a gunicorn worker), never in this test process.
    from app.extensions import broker, hub

    app.config["REDIS_URL"] = None
    broker.init_app(app, hub)
    yield app
    # products.latest_job_id and jobs.product_id point at each other, and the suite's emptying
    # of SQLite tables runs with foreign keys on (its PRAGMA runs inside a transaction, where
    # SQLite ignores it): unlink them first.
    from app.extensions import db

    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            db.session.execute(text("UPDATE products SET latest_job_id = NULL"))
            db.session.commit()
        db.session.remove()

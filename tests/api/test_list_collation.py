"""On a database whose collation is not by code point, the dispatchable list keeps that
collation's order: the workers cannot sort names that way, so they do not keep the list
(app/realtime/livelist.py) and PostgreSQL builds it after every change."""

from __future__ import annotations

import os

import psycopg
import pytest
from sqlalchemy.engine import make_url

from app import create_app
from app.extensions import db, hub
from config import TestConfig
from tests.support import services

URL = "/api/live-products/dispatchable"
NAMES = ["bolt", "Bolt", "Zapfen", "Ärmel", "éclair", "axle", "Axle"]
ICU_DB = f"trackopz_icu_{os.getpid()}"


@pytest.fixture(scope="module")
def icu_url():
    """A database of its own whose default collation is ICU's English one."""
    base = make_url(services.require_postgres())
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(False)

    def run(sql: str) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    run(f"DROP DATABASE IF EXISTS {ICU_DB}")
    run(
        f"CREATE DATABASE {ICU_DB} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' "
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )
    yield base.set(database=ICU_DB).render_as_string(False)
    run(f"DROP DATABASE IF EXISTS {ICU_DB} WITH (FORCE)")


@pytest.fixture
def app(icu_url):
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=icu_url, REDIS_URL=None)
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    yield app
    hub.stop()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_the_list_keeps_the_databases_collation_after_changes(app, client, make):
    machine = make.machine()
    products = {}
    for name in NAMES:
        products[name] = make.product(name=name)
        make.job(products[name]["id"], machine["id"])

    def names() -> list[str]:
        response = client.get(URL)
        assert response.status_code == 200, response.get_json()
        return [i["name"] for i in response.get_json()["dispatchableProducts"]]

    def in_the_database() -> list[str]:
        url = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(False), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name FROM products WHERE state = 'ON' ORDER BY name, id"
            ).fetchall()
        return [name for (name,) in rows]

    expected = in_the_database()
    assert expected != sorted(NAMES)  # a dictionary order, not the code points'
    assert names() == expected
    assert make.action(products["axle"]["id"], "move_to_past").status_code == 200
    assert make.action(products["axle"]["id"], "reactivate").status_code == 200
    assert make.action(products["Bolt"]["id"], "move_to_past").status_code == 200
    assert names() == in_the_database()

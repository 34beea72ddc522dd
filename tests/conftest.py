"""Fixtures: app → client → db, the same tests on SQLite and, when configured, on Postgres."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from app import create_app
from app.extensions import db as _db
from config import TestConfig
from tests.support import services

pytest_plugins = ["tests.support.browser"]  # one Chromium for every module that drives pages

BACKENDS = ["sqlite", "postgres"]
_schema_ready: set[str] = set()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(
        os.environ.get("TRACKOPZ_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'trackopz-test.db'}"


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend, sqlite_url) -> str:
    if backend == "postgres":
        return services.require_postgres()
    return sqlite_url


@pytest.fixture
def app(database_url):
    """A fresh app on an empty, migrated database."""
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=database_url)
    with app.app_context():
        if database_url not in _schema_ready:
            from flask_migrate import upgrade

            upgrade()
            _schema_ready.add(database_url)
        _empty_tables()
    yield app
    with app.app_context():
        _db.session.remove()
        _db.engine.dispose()


def _empty_tables() -> None:
    tables = [t.name for t in reversed(_db.metadata.sorted_tables)]
    if _db.engine.dialect.name == "postgresql":
        _db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        # The PRAGMA below is a no-op inside a transaction (the engine always opens one), and
        # products.latest_job_id and jobs.product_id point at each other: unlink them first.
        _db.session.execute(text("UPDATE products SET latest_job_id = NULL"))
        _db.session.execute(text("PRAGMA foreign_keys=OFF"))
        for name in tables:
            _db.session.execute(text(f"DELETE FROM {name}"))
        _db.session.execute(text("PRAGMA foreign_keys=ON"))
    _db.session.commit()


def make_user(app, name: str, role: str, password: str | None = None):
    """A user, and a bearer token acting as them: (user id, token)."""
    from app.auth import service
    from app.models import User

    with app.app_context():
        if password is None:  # skip the slow hash when the test never signs in with it
            _db.session.add(User(name=name, role=role, password_hash="!"))
            _db.session.commit()
        else:
            service.create_user(name=name, role=role, password=password)
        token, plain = service.create_token(user_name=name, name=f"{name}-test")
        return token.user_id, plain


def authed_client(app, name: str, role: str):
    """A test client sending a bearer token for a new user with `role`."""
    _, plain = make_user(app, name, role)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {plain}"
    return client


@pytest.fixture
def client(app):
    """Signed in as a manager, who may do everything."""
    return authed_client(app, "boss", "manager")


@pytest.fixture
def anon_client(app):
    """Nobody signed in."""
    return app.test_client()


@pytest.fixture
def db(app):
    with app.app_context():
        yield _db
        _db.session.remove()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Factory:
    """Test data through the API, the way a user makes it."""

    def __init__(self, client):
        self.client = client
        self.n = 0

    def _ok(self, response, code=201):
        assert response.status_code == code, response.get_json()
        return response.get_json()

    def product(self, name=None, code=None):
        self.n += 1
        body = {"name": name or f"Shaft {self.n}", "code": code or f"P-{self.n:04d}"}
        return self._ok(self.client.post("/api/products", json=body))["product"]

    def machine(self, name=None, code=None, **extra):
        self.n += 1
        body = {"name": name or f"Lathe {self.n}", "code": code or f"M-{self.n:04d}", **extra}
        return self._ok(self.client.post("/api/machines", json=body))["machine"]

    def job(self, product_id, machine_id, stage=None, **extra):
        self.n += 1
        body = {
            "productId": product_id,
            "machineId": machine_id,
            "stage": stage or f"stage {self.n}",
            **extra,
        }
        return self._ok(self.client.post("/api/jobs", json=body))["job"]

    def live_product(self, **kw):
        """A product with one ON job on a new machine: (product, machine, job)."""
        product = self.product(**kw)
        machine = self.machine()
        job = self.job(product["id"], machine["id"])
        return product, machine, job

    def action(self, product_id, action, **extra):
        return self.client.post(
            "/api/products/lifecycle", json={"productId": product_id, "action": action, **extra}
        )


@pytest.fixture
def make(client) -> Factory:
    return Factory(client)

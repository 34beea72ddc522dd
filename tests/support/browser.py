"""Browser fixtures: Debian's Chromium driven by Playwright against real gunicorn processes."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support import services
from tests.support.servers import Gunicorn, auth_session, flask_cli, make_token

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TABLET = {"width": 1280, "height": 800}  # a 10-inch tablet in landscape
PASSWORD = "test-password"  # what make_token gives the users it makes
# Who uses which page in these tests: one user, one role, one tablet each.
USERS = {"olga": "operator", "dmitri": "dispatcher", "mira": "manager"}


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        services.missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Stack:
    """A migrated SQLite database and the gunicorn hosts serving it (one worker, no Redis)."""

    directory: Path
    hosts: list[Gunicorn] = field(default_factory=list)
    token: str = ""  # the manager's, for Api

    @property
    def env(self) -> dict:
        return {
            "DATABASE_URL": f"sqlite:///{self.directory / 'trackopz.db'}",
            "SECRET_KEY": "test-only-secret",
            "REDIS_URL": "",  # one worker per host: the in-process broker
            "SSE_RETRY_MS": "1000",
            "SSE_KEEPALIVE_SECONDS": "2",
        }

    def host(self) -> Gunicorn:
        host = Gunicorn(self.env, workers=1, log_dir=self.directory).start()
        self.hosts.append(host)
        return host

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()


def _make_stack(directory: Path) -> Stack:
    """The demo factory (it makes the screenshots readable) and the USERS."""
    stack = Stack(directory)
    flask_cli("db", "upgrade", env=stack.env)
    flask_cli("seed-demo", env=stack.env)
    managers = [name for name, role in USERS.items() if role == "manager"]
    stack.token = make_token(stack.env, name=managers[0], role="manager")
    return stack


def _add_users(stack: Stack) -> None:
    api = Api(stack.hosts[0].url, stack.token)
    for name, role in USERS.items():
        if role != "manager":
            api.post("/api/users", {"name": name, "role": role, "password": PASSWORD}, 201)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One host on the demo factory, shared by a module's tests; each test adds its own products."""
    s = _make_stack(tmp_path_factory.mktemp("browser"))
    s.host()
    _add_users(s)
    yield s
    s.stop()


@pytest.fixture
def own_stack(tmp_path):
    """A stack of the test's own, with two hosts on one database, for tests that stop one."""
    s = _make_stack(tmp_path)
    s.host()
    s.host()
    _add_users(s)
    yield s
    s.stop()


class Api:
    """The JSON API over HTTP, the way another user or a script changes things."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.http = auth_session(token)

    def post(self, path: str, body: dict, expect: int | None = None) -> requests.Response:
        r = self.http.post(self.base + path, json=body, timeout=10)
        if expect is not None:
            assert r.status_code == expect, r.text
        return r

    def get(self, path: str) -> dict:
        r = self.http.get(self.base + path, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def live_product(self, name: str | None = None) -> dict:
        """A new product running its first stage on a new machine."""
        tag = uuid.uuid4().hex[:6].upper()
        product = self.post(
            "/api/products", {"name": name or f"Test Shaft {tag}", "code": f"T-{tag}"}, 201
        ).json()["product"]
        machine = self.post(
            "/api/machines", {"name": f"Test Lathe {tag}", "code": f"L-{tag}"}, 201
        ).json()["machine"]
        self.post(
            "/api/jobs",
            {"productId": product["id"], "machineId": machine["id"], "stage": "Turning"},
            201,
        )
        return product


@pytest.fixture
def api(stack) -> Api:
    return Api(stack.hosts[0].url, stack.token)


@pytest.fixture
def open_page(browser):
    """open_page(url, user) -> a page in a context of its own: `user` signs in on their tablet.

    Waits until its stream is live unless told not to; fails the test on any uncaught
    script error. `context_setup(context)` runs before the page loads (routes, scripts).
    """
    contexts = []
    errors: list[str] = []

    def _open(url: str, user: str, *, wait_live: bool = True, context_setup=None):
        from playwright.sync_api import expect

        context = browser.new_context(viewport=TABLET)
        contexts.append(context)
        if context_setup:
            context_setup(context)
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(f"{url}: {err}"))
        page.goto(url)  # to the sign-in page, which comes back here
        page.get_by_label("Name").fill(user)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.wait_for_url(url)
        expect(page.get_by_test_id("current-user")).to_contain_text(user)
        if wait_live:
            expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "live")
        # Survives only as long as the page is never reloaded.
        page.evaluate("window.__notReloaded = true")
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not errors, errors


@pytest.fixture
def screenshot(artifacts_dir, request):
    """screenshot(page, name) saves a full-page PNG under the artifacts dir and returns its path."""
    folder = artifacts_dir / "browser"
    folder.mkdir(parents=True, exist_ok=True)

    def _shot(page, name: str) -> Path:
        path = folder / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot

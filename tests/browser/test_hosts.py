"""Two hosts behind a load balancer, on Postgres and Redis: a page on one sees the other's changes."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support import services
from tests.support.browser import PASSWORD, Api
from tests.support.servers import Gunicorn, flask_cli, make_token

pytestmark = [pytest.mark.browser, pytest.mark.slow]

expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def redis_hosts(tmp_path):
    """Two gunicorn instances (two gevent workers each) sharing a database and a Redis."""
    services.require_postgres()
    redis_url = services.require_redis()
    import psycopg

    base = os.environ["DATABASE_URL"].replace("postgres://", "postgresql://")
    name = f"trackopz_browser_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    tag = f"trackopz-browser-{os.getpid()}"
    env = {
        "DATABASE_URL": urlunsplit(urlsplit(base)._replace(path="/" + name)),
        "REDIS_URL": urlunsplit(urlsplit(redis_url)._replace(path="/11")),
        "REDIS_CHANNEL": f"{tag}:events",
        "STREAMS_KEY_PREFIX": f"{tag}:streams:",
        "SECRET_KEY": "test-only-secret",
        "SSE_RETRY_MS": "1000",
        "SSE_KEEPALIVE_SECONDS": "2",
    }
    flask_cli("db", "upgrade", env=env)
    token = make_token(env, name="mira", role="manager")
    hosts = [Gunicorn(env, workers=2, log_dir=tmp_path).start() for _ in range(2)]
    Api(hosts[0].url, token).post(
        "/api/users", {"name": "dmitri", "role": "dispatcher", "password": PASSWORD}, 201
    )
    yield hosts, token
    for host in hosts:
        host.stop()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def option(page, product_id):
    return page.get_by_test_id("product-select").locator(f'option[value="{product_id}"]')


def test_a_dispatch_page_on_one_host_follows_changes_made_on_the_other(redis_hosts, open_page):
    (host_a, host_b), token = redis_hosts
    on_b = Api(host_b.url, token)
    staying = on_b.live_product()
    page = open_page(host_a.url + "/dispatch", "dmitri")
    expect(option(page, staying["id"])).to_have_count(1)

    arriving = on_b.live_product()  # made on B after the page on A opened
    expect(option(page, arriving["id"])).to_have_count(1, timeout=2000)

    on_b.post(
        "/api/products/lifecycle",
        {"productId": staying["id"], "action": "move_to_past", "reason": "made on B"},
        200,
    )
    expect(option(page, staying["id"])).to_have_count(0, timeout=2000)
    expect(option(page, arriving["id"])).to_have_count(1)

"""Two gunicorn instances ("hosts"), two gevent workers each, one Postgres, one Redis: every
client of every worker gets every event once, in id order, across a worker's kill -9."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import psycopg
import pytest
import requests

from tests.realtime.helpers import RedisServer, reader_workers, start_readers, stop_readers
from tests.realtime.shop import Shop, events_after, newest_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_server(redis_binary, artifacts_dir):
    """This module's own redis-server: its last test stops it and starts it again."""
    server = RedisServer(redis_binary, artifacts_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hosts(gunicorns, rt_env, redis_server):
    return tuple(gunicorns({**rt_env, "REDIS_URL": redis_server.url}, workers=2, count=2))


@pytest.fixture(scope="module")
def shop(hosts, http):
    a, _ = hosts
    shop = Shop(a.url, http())
    machines = [shop.machine() for _ in range(3)]
    shop.products = shop.live_products(8, machines)
    shop.machines = machines
    return shop


def spread(host, http, *, per_worker: int, limit: int = 16) -> list:
    """Readers on `host` until each of its workers holds at least `per_worker` of them."""
    wait_workers_ready(host, http)
    readers = start_readers(host.url, http, 2 * per_worker)
    while True:
        by_pid = reader_workers(readers, host.port, host.worker_pids())
        if all(len(rs) >= per_worker for rs in by_pid.values()):
            return readers
        if len(readers) >= limit:
            stop_readers(readers)
            raise AssertionError(f"connections did not spread over the workers: {by_pid}")
        time.sleep(0.1)
        readers += start_readers(host.url, http, 1)


def wait_workers_ready(host, http, timeout: float = 30) -> None:
    """Until every worker of `host` has answered (a new worker takes a moment to boot)."""
    deadline = time.monotonic() + timeout
    answered: set[int] = set()
    while not set(host.worker_pids()) <= answered:
        assert time.monotonic() < deadline, f"workers {host.worker_pids()} did not all answer"
        with http() as api:
            api.headers["Connection"] = "close"
            try:
                answered.add(
                    api.get(host.url + "/api/realtime/stats", timeout=5).json()["hub"]["pid"]
                )
            except requests.RequestException:
                time.sleep(0.2)


def assert_all_events_once_in_order(readers, database_url: str, newest: int, timeout=20) -> None:
    for r in readers:
        assert r.wait_for(newest, timeout), (
            f"{r.name} stopped at {r.last_id}, newest is {newest}; problems: {r.problems}"
        )
    for r in readers:
        expected = events_after(database_url, r.first_last_id)
        assert r.problems == []
        got = [(e[0], e[1]) for e in r.events]
        assert len(got) == len({e[0] for e in got}), f"{r.name} got an event twice"
        assert got == expected, f"{r.name}: {len(got)} events, expected {len(expected)}"


def assert_every_worker_subscribed(hosts, http, timeout: float = 15) -> None:
    """Ask /api/realtime/stats (new connections, so each worker answers some) until every
    worker of every host says its subscription is up."""
    deadline = time.monotonic() + timeout
    subscribed: dict[int, bool] = {}
    while time.monotonic() < deadline:
        for host in hosts:
            with http() as api:
                api.headers["Connection"] = "close"
                stats = api.get(host.url + "/api/realtime/stats", timeout=5).json()["hub"]
            subscribed[stats["pid"]] = stats["subscribed"]
        pids = {p for host in hosts for p in host.worker_pids()}
        if all(subscribed.get(p) for p in pids):
            return
        time.sleep(0.1)
    raise AssertionError(f"not every worker subscribed again: {subscribed}")


def post_concurrently(jobs, threads: int = 4) -> list[int]:
    """Run the callables from `threads` threads; their status codes."""
    statuses: list[int] = []
    lock = threading.Lock()
    work = list(jobs)

    def run():
        while True:
            with lock:
                if not work:
                    return
                job = work.pop(0)
            status = job()
            with lock:
                statuses.append(status)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    return statuses


def test_every_client_of_every_worker_and_host_gets_every_event_once_in_order(
    hosts, shop, http, rt_database_url
):
    a, b = hosts
    readers = spread(a, http, per_worker=2) + spread(b, http, per_worker=2)
    try:
        sessions = threading.local()

        def session():
            if not hasattr(sessions, "s"):
                sessions.s = http()
            return sessions.s

        def toggle(pid):
            def job():
                mine = Shop(a.url, session())
                mine.live = shop.live
                return mine.toggle(pid).status_code

            return job

        def rename(mid, n):
            def job():
                r = session().patch(
                    f"{b.url}/api/machines/{mid}", json={"name": f"Rig {mid} v{n}"}, timeout=15
                )
                return r.status_code

            return job

        # Each product is toggled by one thread at a time (its jobs are spread over rounds);
        # machine renames on the other host race the transitions on those machines.
        jobs = []
        for round_ in range(3):
            jobs += [toggle(pid) for pid in shop.products]
            jobs += [rename(mid, round_) for mid in shop.machines]
        statuses = post_concurrently(jobs, threads=len(shop.products))
        assert set(statuses) <= {200, 409}, statuses
        assert statuses.count(200) >= len(statuses) - len(shop.products)
        newest = newest_event(rt_database_url)
        assert_all_events_once_in_order(readers, rt_database_url, newest)

        # One change on host A reaches the pages on host B within a second.
        started = time.monotonic()
        assert shop.toggle(shop.products[0]).status_code == 200
        newest = newest_event(rt_database_url)
        on_b = [r for r in readers if r.base_url == b.url]
        for r in on_b:
            assert r.wait_for(newest, 1.0 - (time.monotonic() - started)), r.name
    finally:
        stop_readers(readers)


def live_list_in_the_database(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT p.id, p.name, m.name, j.id, j.quantity_produced FROM products p "
            "JOIN jobs j ON j.id = p.latest_job_id JOIN machines m ON m.id = j.machine_id "
            "WHERE p.state = 'ON' ORDER BY p.name, p.id"
        ).fetchall()


def test_the_list_on_every_worker_shows_a_change_made_on_the_other_host(
    hosts, shop, http, rt_database_url
):
    """Each worker keeps the list from its hub's updates: a GET that comes right after a change
    made elsewhere (its event still on the way through Redis) answers it all the same."""
    a, b = hosts
    for host in hosts:
        wait_workers_ready(host, http)
    writer = http()
    # What the module's earlier tests left: their concurrent toggles may leave any product live
    # or past. Product 0 is made live for the output changes, and is not toggled below.
    on = {row[0] for row in live_list_in_the_database(rt_database_url)}
    shop.live.update({pid: pid in on for pid in shop.products})
    if not shop.live[shop.products[0]]:
        assert shop.toggle(shop.products[0]).status_code == 200
    machine = shop.machines[0]
    changes = [lambda: shop.toggle(shop.products[1]), lambda: shop.toggle(shop.products[1])]
    changes += [
        lambda n=n: writer.patch(
            f"{a.url}/api/machines/{machine}", json={"name": f"Rig {machine} r{n}"}, timeout=15
        )
        for n in range(2)
    ]
    served_by: set[int] = set()
    for n in range(12):
        change = changes[n % len(changes)]
        if n % 3 == 2:  # output on a live product's job
            item = next(i for i in live_list_in_the_database(rt_database_url))
            r = writer.post(
                f"{a.url}/api/jobs/{item[3]}/updates", json={"operator": "t", "quantity": 1}
            )
            assert r.status_code == 201, r.text
        else:
            assert change().status_code == 200
        expected = live_list_in_the_database(rt_database_url)
        for host in (b, a, b):
            with http() as api:  # a new connection (either worker), kept for both GETs
                got = api.get(host.url + "/api/live-products/dispatchable", timeout=10)
                pid = api.get(host.url + "/api/realtime/stats", timeout=10).json()["hub"]["pid"]
            assert got.status_code == 200, got.text
            items = got.json()["dispatchableProducts"]
            answered = [
                (i["id"], i["name"], i["process"], i["jobId"], i["quantityProduced"]) for i in items
            ]
            assert answered == [tuple(row) for row in expected], f"change {n} on {host.url}"
            served_by.add(pid)
    assert len(served_by) >= 3, "the GETs did not reach most of the workers"


def test_connected_clients_counts_the_clients_of_every_worker(hosts, http):
    a, b = hosts
    api = http()

    def connected() -> int:
        r = api.get(a.url + "/api/dashboard/status", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["dashboard"]["realtime"]["connectedClients"]

    def settles_at(n: int, timeout: float = 6) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if connected() == n:
                return True
            time.sleep(0.2)
        return False

    assert settles_at(0)
    readers = spread(a, http, per_worker=1) + spread(b, http, per_worker=1)
    try:
        assert settles_at(len(readers)), (connected(), len(readers))
        half = readers[: len(readers) // 2]
        stop_readers(half)
        assert settles_at(len(readers) - len(half)), (connected(), len(readers) - len(half))
    finally:
        stop_readers(readers)
    assert settles_at(0)


def _commit_unpublished_event(database_url: str, n: int) -> int:
    """An event committed the way the outbox commits it, never published: what a worker
    killed between its commit and its publish leaves behind."""
    import psycopg

    from app.realtime.outbox import EVENT_LOCK_KEY

    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_LOCK_KEY,))
        (event_id,) = conn.execute(
            "INSERT INTO events (type, payload, created_at) VALUES "
            "('machine_status_changed', %s, now() AT TIME ZONE 'utc') RETURNING id",
            (f'{{"orphan": {n}}}',),
        ).fetchone()
    return event_id


def test_a_burst_of_new_keepalive_connections_is_shared_by_the_workers(hosts, auth_headers):
    """Sixteen clients connect at once and keep their connections (as a proxy's upstream pool
    or a writer's session does) while one worker is busy for a moment: the other does not take
    them all, so that neither core idles later while the other serves all sixteen."""
    import http.client
    import json
    from urllib.parse import urlsplit

    a, _ = hosts
    where = urlsplit(a.url)
    # Both workers up and warm: each loads the app after gunicorn forks it, and a worker's
    # first requests are slow (first imports, first connections).
    answered: Counter = Counter()
    deadline = time.monotonic() + 30
    while len(answered) < 2 or min(answered.values()) < 5:
        assert time.monotonic() < deadline, f"the workers answered {dict(answered)} times"
        stats = requests.get(a.url + "/api/realtime/stats", headers=auth_headers, timeout=5)
        answered[stats.json()["hub"]["pid"]] += 1
    connections = [
        http.client.HTTPConnection(where.hostname, where.port, timeout=10) for _ in range(16)
    ]
    try:
        # The burst comes while one worker is busy for a few milliseconds (stopped, here).
        busy = a.worker_pids()[-1]
        os.kill(busy, signal.SIGSTOP)
        try:
            for conn in connections:
                conn.connect()
            time.sleep(0.003)
        finally:
            os.kill(busy, signal.SIGCONT)
        for conn in connections:  # a quick request on each: all are accepted meanwhile
            conn.request("GET", "/healthz")
            assert conn.getresponse().read()
        workers = []
        for conn in connections:
            for _ in range(3):  # each connection keeps its worker: ask it three times
                conn.request("GET", "/api/realtime/stats", headers=auth_headers)
                response = conn.getresponse()
                assert response.status == 200
                workers.append((id(conn), json.loads(response.read())["hub"]["pid"]))
        by_connection = dict(workers)
        assert len(set(workers)) == len(connections)  # a keep-alive connection stays put
        served = {
            pid: list(by_connection.values()).count(pid) for pid in set(by_connection.values())
        }
        assert served.get(busy, 0) >= 3 and len(served) == 2, served
    finally:
        for conn in connections:
            conn.close()


def test_an_event_its_worker_never_published_still_reaches_everyone(
    hosts, shop, http, rt_database_url
):
    a, b = hosts
    readers = spread(a, http, per_worker=1) + spread(b, http, per_worker=1)
    try:
        # Nothing follows it: the hubs find it when the channel has been quiet a while.
        orphan = _commit_unpublished_event(rt_database_url, 1)
        for r in readers:
            assert r.wait_for(orphan, 10), f"{r.name} never got the orphan event {orphan}"
        # Something follows it at once: the next published event shows the gap.
        orphan = _commit_unpublished_event(rt_database_url, 2)
        started = time.monotonic()
        assert shop.toggle(shop.products[0]).status_code == 200
        newest = newest_event(rt_database_url)
        for r in readers:
            assert r.wait_for(newest, 2), f"{r.name} stopped at {r.last_id}"
        assert time.monotonic() - started < 2
        assert_all_events_once_in_order(readers, rt_database_url, newest)
    finally:
        stop_readers(readers)


def _post_until(stop: threading.Event, shop: Shop, hosts, statuses: list, lost: list) -> None:
    """Toggle products round-robin on both hosts until told to stop. A request that dies with
    its worker may or may not have committed (the database says): its retry may get a 409."""
    session = shop.session
    i = 0
    while not stop.is_set():
        pid = shop.products[i % len(shop.products)]
        host = hosts[i % len(hosts)]
        i += 1
        for _ in range(3):
            try:
                r = shop.toggle(pid, host.url)
                statuses.append(r.status_code)
                if r.status_code == 409:  # the lost request had committed: in step again
                    shop.live[pid] = not shop.live[pid]
                break
            except requests.RequestException as err:
                lost.append(repr(err))
                session.close()
                time.sleep(0.1)


def _after_more_writes(statuses: list, n: int, timeout: float = 30) -> None:
    target = statuses.count(200) + n
    deadline = time.monotonic() + timeout
    while statuses.count(200) < target:
        assert time.monotonic() < deadline, f"the writes stalled: {statuses}"
        time.sleep(0.02)


def test_a_worker_killed_while_events_flow_loses_its_clients_nothing(
    hosts, shop, http, rt_database_url
):
    a, b = hosts
    readers = spread(a, http, per_worker=2) + spread(b, http, per_worker=2)
    try:
        on_a = reader_workers(readers, a.port, a.worker_pids())
        on_b = reader_workers(readers, b.port, b.worker_pids())
        victims = [max(on_a, key=lambda p: len(on_a[p])), max(on_b, key=lambda p: len(on_b[p]))]
        cut_off = on_a[victims[0]] + on_b[victims[1]]
        stop = threading.Event()
        statuses: list[int] = []
        lost: list[str] = []
        poster = threading.Thread(target=_post_until, args=(stop, shop, (a, b), statuses, lost))
        poster.start()
        try:
            _after_more_writes(statuses, 3)
            os.kill(victims[0], signal.SIGKILL)  # a worker that takes writes and has clients
            _after_more_writes(statuses, 3)
            os.kill(victims[1], signal.SIGKILL)
            _after_more_writes(statuses, 4)
        finally:
            stop.set()
            poster.join(30)
        assert set(statuses) <= {200, 409}, statuses
        assert statuses.count(409) <= len(lost), (statuses, lost)
        newest = newest_event(rt_database_url)
        assert_all_events_once_in_order(readers, rt_database_url, newest, timeout=30)
        for r in cut_off:
            assert r.connects >= 2, f"{r.name} was on a killed worker but never reconnected"
    finally:
        stop_readers(readers)
    for host in (a, b):  # the masters replaced their workers
        deadline = time.monotonic() + 15
        while len(host.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(host.worker_pids()) == 2
        wait_workers_ready(host, http)


def test_redis_stopped_while_writes_go_on_then_restarted(
    hosts, shop, http, redis_server, rt_database_url
):
    """Every write answers 200 without Redis; its events still reach every client (the hubs
    read the table meanwhile), and nothing comes twice once Redis is back and the relays run."""
    a, b = hosts
    readers = spread(a, http, per_worker=1) + spread(b, http, per_worker=1)
    try:
        for pid in shop.products[:2]:
            assert shop.toggle(pid).status_code == 200
        redis_server.stop()
        statuses = []
        for i in range(8):
            r = shop.toggle(shop.products[i % len(shop.products)], (a, b)[i % 2].url)
            statuses.append((r.status_code, r.text[:200]))
        assert [s for s, _ in statuses] == [200] * 8, statuses
        newest = newest_event(rt_database_url)
        for r in readers:  # during the outage
            assert r.wait_for(newest, 8), f"{r.name} stopped at {r.last_id} of {newest}"

        redis_server.start()
        assert_every_worker_subscribed((a, b), http)
        for i in range(4):
            assert shop.toggle(shop.products[i], (a, b)[i % 2].url).status_code == 200
        newest = newest_event(rt_database_url)
        assert_all_events_once_in_order(readers, rt_database_url, newest)
    finally:
        stop_readers(readers)

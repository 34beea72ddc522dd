"""The dispatchable list a worker keeps from its hub's events (app/realtime/livelist.py): after
every kind of change it answers what the database would, in the database's order, without
building the list again."""

from __future__ import annotations

import json

import pytest

from app.extensions import broker, hub
from tests.api.conftest import comparable, ok, statements

URL = "/api/live-products/dispatchable"
STREAM = URL + "/stream"
DASHBOARD = "/api/dashboard/status"
# Names whose order differs between a code-point collation and a dictionary one: upper case
# before lower, digits as characters, accented letters after z.
NAMES = ["bolt", "Bolt", "Zapfen", "Ärmel", "éclair", "10 Gear", "2 Gear", "axle", "Axle"]


@pytest.fixture
def app(app):
    """The module's app with the in-process broker, whatever REDIS_URL says: each commit's
    events reach the app's own hub at once, as a gevent worker's hub hears them from Redis."""
    app.config["REDIS_URL"] = None
    broker.init_app(app, hub)
    yield app
    hub.stop()


@pytest.fixture
def floor(make):
    """Live products with the names above, spread over three machines; one machine left idle."""
    machines = [make.machine(name=f"Cell {n}") for n in range(3)]
    products = []
    for i, name in enumerate(NAMES):
        product = make.product(name=name)
        job = make.job(product["id"], machines[i % 3]["id"])
        products.append((product, job))
    return machines, products


def test_after_every_kind_of_change_the_kept_list_is_the_databases_list(
    app, client, make, cold, floor, sql
):
    machines, products = floor
    spare = make.machine(name="Spare")
    (first, first_job), (second, _), (third, _), (fourth, _) = products[:4]
    extra = make.product(name="Bearing")
    changes = {
        "output logged": lambda: client.post(
            f"/api/jobs/{first_job['id']}/updates", json={"operator": "a", "quantity": 4}
        ),
        "move_to_past": lambda: make.action(second["id"], "move_to_past"),
        "reactivate": lambda: make.action(second["id"], "reactivate"),
        "update_state OFF": lambda: make.action(third["id"], "update_state", newState="OFF"),
        "next job on another machine": lambda: client.post(
            "/api/jobs", json={"productId": first["id"], "machineId": spare["id"]}
        ),
        "a new product goes live": lambda: client.post(
            "/api/jobs", json={"productId": extra["id"], "machineId": machines[0]["id"]}
        ),
        "a machine with live products renamed": lambda: client.patch(
            f"/api/machines/{machines[1]['id']}", json={"name": "Cell B"}
        ),
        "dispatch": lambda: client.post(URL, json={"productId": fourth["id"]}),
        "batch dispatch": lambda: client.post(
            URL + "/batch",
            json={"productIds": [p["id"] for p, _ in products[5:7]], "destination": "Dock 1"},
        ),
    }
    ok(client.get(URL))  # the worker's copy is read here
    for label, change in changes.items():
        response = change()
        assert response.status_code < 300, (label, response.get_json())
        with statements(app) as ran:
            answer = client.get(URL)
        assert answer.status_code == 200, (label, answer.get_json())
        # Brought forward with the hub's updates, not read from the database again.
        assert not [s for s in ran if "products" in s], label
        dashboard = client.get(DASHBOARD)  # its first live products come from the kept list
        expected = cold(URL)
        assert answer.headers["ETag"] == expected.headers["ETag"], label
        assert comparable(answer) == comparable(expected), f"after {label}"
        in_the_database = sql(
            "SELECT p.id, m.name, j.quantity_produced FROM products p "
            "JOIN jobs j ON j.id = p.latest_job_id JOIN machines m ON m.id = j.machine_id "
            "WHERE p.state = 'ON' ORDER BY p.name, p.id"
        )
        items = answer.get_json()["dispatchableProducts"]
        assert [(i["id"], i["process"], i["quantityProduced"]) for i in items] == in_the_database
        assert comparable(dashboard) == comparable(cold(DASHBOARD)), f"dashboard after {label}"
        live = dashboard.get_json()["dashboard"]["liveProducts"]
        assert live == expected.get_json()["dispatchableProducts"][:50], label


def test_a_window_that_no_longer_reaches_back_has_the_list_read_again(client, make, cold, floor):
    _, products = floor
    ok(client.get(URL))
    for product, _ in products[:3]:
        assert make.action(product["id"], "move_to_past").status_code == 200
    hub.window.clear()  # as when more events came than the window holds
    answer = client.get(URL)
    assert comparable(answer) == comparable(cold(URL))
    assert answer.get_json()["count"] == len(NAMES) - 3


def test_an_update_the_list_missed_is_caught_by_the_next_ones_count(client, make, cold, floor):
    """Each update's count is the length of the list it leaves: a kept list that disagrees is
    read again rather than answered."""
    _, products = floor
    (gone, _), (_, job) = products[0], products[1]
    ok(client.get(URL))
    assert make.action(gone["id"], "move_to_past").status_code == 200
    lost = [f for f in hub.window if b"dispatchable_products_update" in f[1]][-1]
    hub.window.remove(lost)
    logged = client.post(f"/api/jobs/{job['id']}/updates", json={"operator": "a", "quantity": 1})
    assert logged.status_code == 201
    answer = client.get(URL)
    assert gone["id"] not in [i["id"] for i in answer.get_json()["dispatchableProducts"]]
    assert comparable(answer) == comparable(cold(URL))


def test_a_new_stream_starts_from_the_kept_list_at_the_hubs_last_event(
    app, client, make, cold, floor
):
    _, products = floor
    ok(client.get(URL))  # the worker's copy is read here
    for product, _ in products[:2]:
        assert make.action(product["id"], "move_to_past").status_code == 200
    with statements(app) as ran:
        hello = first_message(client)
    assert not [s for s in ran if "products" in s], "the snapshot was read from the database"
    assert hello["lastEventId"] == hub.last_id
    listed = cold(URL).get_json()
    assert hello["dispatchableProducts"] == listed["dispatchableProducts"]
    assert hello["count"] == listed["count"] == len(NAMES) - 2


def first_message(client) -> dict:
    """The data of a new stream's connection_established."""
    response = client.get(STREAM, buffered=False)
    try:
        buffer = b""
        for chunk in response.response:
            buffer += chunk
            for block in buffer.split(b"\n\n")[:-1]:  # whole messages only
                if block.startswith(b"data: "):
                    message = json.loads(block[len(b"data: ") :])
                    assert message["type"] == "connection_established"
                    return message["data"]
        raise AssertionError(f"no connection_established in {buffer[:200]!r}")
    finally:
        response.close()

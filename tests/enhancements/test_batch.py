"""Batch lifecycle actions and batch dispatch: per-item results, atomicity, one delta per batch."""

from __future__ import annotations

from sqlalchemy import func, select

from app.extensions import db as _db
from app.models import Dispatch, Event, Transition
from tests.conftest import authed_client


def _events_after(app, last_id: int) -> list[Event]:
    with app.app_context():
        events = _db.session.scalars(
            select(Event).where(Event.id > last_id).order_by(Event.id)
        ).all()
        _db.session.expunge_all()
        return events


def _last_event_id(app) -> int:
    with app.app_context():
        return _db.session.scalar(select(func.coalesce(func.max(Event.id), 0)))


def _count(app, model) -> int:
    with app.app_context():
        return _db.session.scalar(select(func.count()).select_from(model))


def _state(client, product_id):
    return client.get(f"/api/products/lifecycle?productId={product_id}").get_json()["lifecycle"][
        "currentState"
    ]


def _live_products(make, n):
    return [make.live_product()[0] for _ in range(n)]


def test_non_atomic_batch_applies_the_good_items_and_reports_the_bad_one(app, client, make):
    a, b, c = _live_products(make, 3)
    past = make.live_product()[0]
    assert make.action(past["id"], "move_to_past").status_code == 200
    start = _last_event_id(app)

    response = client.post(
        "/api/products/lifecycle/batch",
        json={
            "actions": [
                {"productId": a["id"], "action": "move_to_past", "reason": "end of shift"},
                {"productId": past["id"], "action": "move_to_past"},
                {"productId": str(b["id"]), "action": "update_state", "newState": "OFF"},
                {"productId": c["id"], "action": "move_to_past"},
            ]
        },
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True and body["applied"] is True and body["atomic"] is False
    assert (body["succeeded"], body["failed"]) == (3, 1)
    results = body["results"]
    assert [r["productId"] for r in results] == [a["id"], past["id"], b["id"], c["id"]]
    assert [r["success"] for r in results] == [True, False, True, True]
    assert results[1]["status"] == 409 and "already past" in results[1]["error"]
    assert results[0]["transition"]["reason"] == "end of shift"
    assert results[0]["transition"]["actor"] == "boss"
    assert results[2]["transition"]["toState"] == "OFF"
    for p in (a, b, c, past):
        assert _state(client, p["id"]) == "OFF"

    events = _events_after(app, start)
    types = [e.type for e in events]
    assert types.count("product_moved_to_past") == 2
    assert types.count("product_state_updated") == 1
    deltas = [e for e in events if e.type == "dispatchable_products_update"]
    assert len(deltas) == 1, types
    assert deltas[0].payload["added"] == []
    assert sorted(deltas[0].payload["removed"]) == sorted([a["id"], b["id"], c["id"]])
    assert deltas[0].payload["count"] == 0
    assert events[-1].type == "dispatchable_products_update"  # after every item's own events


def test_atomic_batch_with_one_bad_item_changes_nothing_and_writes_no_event(app, client, make):
    a, b = _live_products(make, 2)
    start = _last_event_id(app)
    transitions = _count(app, Transition)

    response = client.post(
        "/api/products/lifecycle/batch",
        json={
            "atomic": True,
            "actions": [
                {"productId": a["id"], "action": "move_to_past"},
                {"productId": 999999, "action": "move_to_past"},
                {"productId": b["id"], "action": "move_to_past"},
                {"productId": a["id"], "action": "move_to_past"},  # already past by item 1
            ],
        },
    )
    assert response.status_code == 409
    body = response.get_json()
    assert body["success"] is False and body["applied"] is False
    assert "items" not in body["error"] and "2, 4" in body["error"]
    results = body["results"]
    assert [r["success"] for r in results] == [False] * 4
    assert results[1]["status"] == 404
    assert results[3]["status"] == 409
    assert "status" not in results[0] and "Not applied" in results[0]["error"]
    assert _state(client, a["id"]) == "ON" and _state(client, b["id"]) == "ON"
    assert _last_event_id(app) == start
    assert _count(app, Transition) == transitions


def test_atomic_batch_that_succeeds_emits_one_delta_after_its_events(app, client, make):
    a, b = _live_products(make, 2)
    past = make.live_product()[0]
    make.action(past["id"], "move_to_past")
    start = _last_event_id(app)

    response = client.post(
        "/api/products/lifecycle/batch",
        json={
            "atomic": True,
            "actions": [
                {"productId": a["id"], "action": "move_to_past"},
                {"productId": past["id"], "action": "reactivate"},
                {"productId": b["id"], "action": "move_to_past"},
                {"productId": b["id"], "action": "reactivate", "reason": "mistake"},
            ],
        },
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["applied"] is True and body["succeeded"] == 4
    assert [r["newState"] for r in body["results"]] == ["OFF", "ON", "OFF", "ON"]

    events = _events_after(app, start)
    deltas = [e for e in events if e.type == "dispatchable_products_update"]
    assert len(deltas) == 1 and events[-1].type == "dispatchable_products_update"
    delta = deltas[0].payload
    assert delta["removed"] == [a["id"]]
    assert sorted(item["id"] for item in delta["added"]) == sorted([past["id"], b["id"]])
    assert delta["count"] == 2
    listed = client.get("/api/live-products/dispatchable").get_json()["dispatchableProducts"]
    assert sorted(p["id"] for p in listed) == sorted([past["id"], b["id"]])


def test_each_item_needs_the_role_of_its_single_call(app, client, make):
    a, b = _live_products(make, 2)
    make.action(b["id"], "move_to_past")
    operator = authed_client(app, "olga", "operator")
    body = operator.post(
        "/api/products/lifecycle/batch",
        json={
            "actions": [
                {"productId": a["id"], "action": "move_to_past"},
                {"productId": b["id"], "action": "reactivate"},
            ]
        },
    ).get_json()
    assert [r["success"] for r in body["results"]] == [True, False]
    assert body["results"][1]["status"] == 403
    assert "dispatcher" in body["results"][1]["error"]
    assert _state(client, b["id"]) == "OFF"
    assert body["results"][0]["transition"]["actor"] == "olga"


def test_batch_requests_are_validated_as_a_whole(app, client, anon_client, make):
    a = make.live_product()[0]
    url = "/api/products/lifecycle/batch"
    assert anon_client.post(url, json={"actions": []}).status_code == 401
    for bad in (
        {},
        {"actions": []},
        {"actions": [{"productId": a["id"], "action": "explode"}]},
        {"actions": [{"action": "move_to_past"}]},
        {"actions": [{"productId": a["id"], "action": "move_to_past"}] * 501},
        {"actions": [{"productId": a["id"], "action": "move_to_past"}], "atomic": "maybe"},
    ):
        response = client.post(url, json=bad)
        assert response.status_code == 400, (bad, response.get_json())
        assert response.get_json()["success"] is False
    assert _state(client, a["id"]) == "ON"
    # update_state without newState is the service's rule: that item fails with 400
    body = client.post(
        url, json={"actions": [{"productId": a["id"], "action": "update_state"}]}
    ).get_json()
    assert body["results"][0]["status"] == 400


def test_a_repeated_idempotency_key_replays_the_batch(app, client, make):
    a = make.live_product()[0]
    payload = {"actions": [{"productId": a["id"], "action": "move_to_past"}]}
    headers = {"Idempotency-Key": "batch-1"}
    first = client.post("/api/products/lifecycle/batch", json=payload, headers=headers)
    again = client.post("/api/products/lifecycle/batch", json=payload, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json() == first.get_json()
    assert _count(app, Transition) == 2  # start_job, then one move_to_past


def test_batch_dispatch_records_each_dispatch_and_one_delta(app, client, make):
    a, b, c = _live_products(make, 3)
    start = _last_event_id(app)
    response = client.post(
        "/api/live-products/dispatchable/batch",
        json={"productIds": [a["id"], b["id"]], "destination": "Dock 3", "notes": "truck 7"},
    )
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert all(r["success"] for r in results)
    assert {r["dispatch"]["destination"] for r in results} == {"Dock 3"}
    assert results[0]["transition"]["reason"] == "dispatched"
    with app.app_context():
        rows = _db.session.scalars(select(Dispatch).order_by(Dispatch.id)).all()
        assert [(d.product_id, d.destination, d.notes, d.dispatched_by) for d in rows] == [
            (a["id"], "Dock 3", "truck 7", "boss"),
            (b["id"], "Dock 3", "truck 7", "boss"),
        ]
    events = _events_after(app, start)
    deltas = [e for e in events if e.type == "dispatchable_products_update"]
    assert len(deltas) == 1 and sorted(deltas[0].payload["removed"]) == sorted([a["id"], b["id"]])
    moved = [e.payload for e in events if e.type == "product_moved_to_past"]
    assert [m["dispatch"]["destination"] for m in moved] == ["Dock 3", "Dock 3"]

    # Again: both are past now, c is live; not atomic, so c is dispatched anyway
    again = client.post(
        "/api/live-products/dispatchable/batch",
        json={"productIds": [a["id"], c["id"]], "destination": "Dock 4"},
    ).get_json()
    assert [r["success"] for r in again["results"]] == [False, True]
    assert "cannot be dispatched" in again["results"][0]["error"]


def test_batch_dispatch_rules(app, client, make):
    a, b = _live_products(make, 2)
    url = "/api/live-products/dispatchable/batch"
    operator = authed_client(app, "olga", "operator")
    assert operator.post(url, json={"productIds": [a["id"]], "destination": "X"}).status_code == 403
    assert (
        client.post(url, json={"productIds": [a["id"], a["id"]], "destination": "X"}).status_code
        == 400
    )
    assert client.post(url, json={"productIds": [a["id"]]}).status_code == 400
    atomic = client.post(
        url, json={"productIds": [a["id"], 424242], "destination": "X", "atomic": True}
    )
    assert atomic.status_code == 409
    assert _count(app, Dispatch) == 0
    assert _state(client, a["id"]) == "ON"


def test_concurrent_atomic_batches_in_opposite_orders_never_deadlock(app, client, make):
    """Products (and machines) are locked in id order up front: two batches naming the same
    products in opposite orders take turns; one applies, the other finds them past (409)."""
    import threading

    for _ in range(5):
        a, b, c = _live_products(make, 3)
        orders = [[a, b, c], [c, b, a]]
        answers = []

        def run(order, answers=answers):
            response = client.post(
                "/api/products/lifecycle/batch",
                json={
                    "atomic": True,
                    "actions": [{"productId": p["id"], "action": "move_to_past"} for p in order],
                },
            )
            answers.append(response.status_code)

        threads = [threading.Thread(target=run, args=(order,)) for order in orders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(answers) == [200, 409]
        for p in (a, b, c):
            assert _state(client, p["id"]) == "OFF"
    with app.app_context():
        moved = _db.session.scalar(
            select(func.count()).select_from(Transition).where(Transition.action == "move_to_past")
        )
    assert moved == 15


def test_atomic_batch_that_stops_and_restarts_a_machines_only_job_leaves_it_running(
    app, client, make
):
    """Each item sees what the items before it did, the machine's status included."""
    product, machine, _ = make.live_product()
    start = _last_event_id(app)
    response = client.post(
        "/api/products/lifecycle/batch",
        json={
            "atomic": True,
            "actions": [
                {"productId": product["id"], "action": "move_to_past"},
                {"productId": product["id"], "action": "reactivate"},
            ],
        },
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["applied"] is True
    assert client.get(f"/api/machines/{machine['id']}").get_json()["machine"]["status"] == "running"
    changes = [
        (e.payload["previousStatus"], e.payload["status"])
        for e in _events_after(app, start)
        if e.type == "machine_status_changed"
    ]
    assert changes == [("running", "idle"), ("idle", "running")]

"""The state machine: move_to_past, reactivate, update_state, the legacy move-to-past, the
lifecycle document and the audit trail. Nothing is ever deleted."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.api.conftest import assert_error, is_iso_z, ok

RESULT_FIELDS = {
    "success",
    "message",
    "previousState",
    "newState",
    "action",
    "reason",
    "timestamp",
    "lifecycle",
    "transition",
}
TRANSITION_FIELDS = {
    "id",
    "productId",
    "jobId",
    "fromState",
    "toState",
    "action",
    "reason",
    "actor",
    "createdAt",
}
LIFECYCLE_FIELDS = {
    "productId",
    "productName",
    "currentState",
    "isDispatchable",
    "currentMachine",
    "currentJob",
    "totalStages",
    "stages",
    "transitions",
    "createdAt",
    "lastUpdated",
}
STAGE_FIELDS = {
    "stageNumber",
    "jobId",
    "machineId",
    "machine",
    "stage",
    "state",
    "timestamp",
    "endedAt",
    "duration",
    "quantityProduced",
}


def dispatchable_ids(client) -> list[int]:
    return [
        p["id"] for p in ok(client.get("/api/live-products/dispatchable"))["dispatchableProducts"]
    ]


def job(client, job_id) -> dict:
    return ok(client.get(f"/api/jobs/{job_id}"))["job"]


def test_move_to_past_turns_the_latest_job_off_and_answers_the_contract(client, make, count, sql):
    product, machine, started = make.live_product()
    body = ok(make.action(product["id"], "move_to_past", reason="batch scrapped"))
    assert RESULT_FIELDS <= set(body)
    assert (body["previousState"], body["newState"]) == ("ON", "OFF")
    assert (body["action"], body["reason"]) == ("move_to_past", "batch scrapped")
    assert isinstance(body["message"], str) and body["message"]
    assert is_iso_z(body["timestamp"])

    transition = body["transition"]
    assert TRANSITION_FIELDS <= set(transition)
    assert transition["productId"] == product["id"] and transition["jobId"] == started["id"]
    assert (transition["fromState"], transition["toState"]) == ("ON", "OFF")
    assert (transition["action"], transition["reason"]) == ("move_to_past", "batch scrapped")
    assert transition["createdAt"] == body["timestamp"]

    lifecycle = body["lifecycle"]
    assert lifecycle["currentState"] == "OFF" and lifecycle["isDispatchable"] is False
    assert lifecycle["transitions"][-1] == transition

    off = job(client, started["id"])
    assert off["state"] == "OFF" and off["endedAt"] == body["timestamp"]
    assert ok(client.get(f"/api/products/{product['id']}"))["product"]["state"] == "OFF"
    assert product["id"] not in dispatchable_ids(client)
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"]["status"] == "idle"
    assert count("transitions", "action = 'move_to_past'") == 1
    (payload,) = [
        p for t, p in sql("SELECT type, payload FROM events") if t == "product_moved_to_past"
    ]
    payload = payload if isinstance(payload, dict) else json.loads(payload)
    assert {k: payload[k] for k in ("productId", "jobId", "previousState", "newState")} == {
        "productId": product["id"],
        "jobId": started["id"],
        "previousState": "ON",
        "newState": "OFF",
    }
    assert payload["reason"] == "batch scrapped" and payload["action"] == "move_to_past"


def test_move_to_past_of_a_past_product_is_409_and_writes_nothing(make, dump):
    product, _, _ = make.live_product()
    ok(make.action(product["id"], "move_to_past"))
    before = dump()
    assert_error(make.action(product["id"], "move_to_past"), 409)
    assert dump() == before


def test_reactivate_turns_the_latest_job_back_on(client, make, count):
    product, machine, started = make.live_product()
    ok(make.action(product["id"], "move_to_past"))
    body = ok(make.action(product["id"], "reactivate", reason="rework"))
    assert (body["previousState"], body["newState"], body["action"]) == ("OFF", "ON", "reactivate")
    assert body["reason"] == "rework"
    assert (body["transition"]["fromState"], body["transition"]["toState"]) == ("OFF", "ON")
    assert body["lifecycle"]["isDispatchable"] is True
    on = job(client, started["id"])
    assert on["state"] == "ON" and on["endedAt"] is None
    assert dispatchable_ids(client) == [product["id"]]
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"]["status"] == "running"
    assert count("jobs") == 1  # the same job again, not a new one


def test_reactivate_of_a_live_product_is_409_and_writes_nothing(make, dump):
    product, _, _ = make.live_product()
    before = dump()
    assert_error(make.action(product["id"], "reactivate"), 409)
    assert dump() == before


def test_update_state_sets_on_and_off(client, make):
    product, _, started = make.live_product()
    off = ok(make.action(product["id"], "update_state", newState="OFF"))
    assert (off["previousState"], off["newState"], off["action"]) == ("ON", "OFF", "update_state")
    assert job(client, started["id"])["state"] == "OFF"
    on = ok(make.action(product["id"], "update_state", newState="ON"))
    assert (on["previousState"], on["newState"]) == ("OFF", "ON")
    assert job(client, started["id"])["state"] == "ON"


def test_update_state_to_the_same_state_is_409_and_without_new_state_400(make, dump):
    product, _, _ = make.live_product()
    before = dump()
    assert_error(make.action(product["id"], "update_state", newState="ON"), 409)
    assert_error(make.action(product["id"], "update_state"), 400)
    assert_error(make.action(product["id"], "update_state", newState=None), 400)
    assert_error(make.action(product["id"], "update_state", newState="on"), 400, field="newState")
    assert_error(make.action(product["id"], "update_state", newState="PAUSED"), 400)
    assert dump() == before


def test_job_id_must_be_the_latest_job(client, make, dump):
    product, _, first = make.live_product()
    second = make.job(product["id"], make.machine()["id"])
    other, _, other_job = make.live_product()
    before = dump()
    assert_error(make.action(product["id"], "move_to_past", jobId=first["id"]), 409)
    assert_error(make.action(product["id"], "move_to_past", jobId=other_job["id"]), 409)
    assert_error(make.action(product["id"], "move_to_past", jobId=99999), 404)
    assert dump() == before
    body = ok(make.action(product["id"], "move_to_past", jobId=str(second["id"])))
    assert body["transition"]["jobId"] == second["id"]


def test_no_job_yet_is_409_unknown_product_404(make, dump):
    product = make.product()
    before = dump()
    for action, extra in (
        ("move_to_past", {}),
        ("reactivate", {}),
        ("update_state", {"newState": "ON"}),
    ):
        assert_error(make.action(product["id"], action, **extra), 409)
        assert_error(make.action(99999, action, **extra), 404)
    assert dump() == before


def test_unknown_or_missing_action_or_product_is_400(client, make, dump):
    product, _, _ = make.live_product()
    before = dump()
    assert_error(make.action(product["id"], "delete"), 400)
    assert_error(make.action(product["id"], "MOVE_TO_PAST"), 400)
    assert_error(make.action(product["id"], ""), 400)
    url = "/api/products/lifecycle"
    assert_error(client.post(url, json={"productId": product["id"]}), 400, field="action")
    assert_error(client.post(url, json={"action": "move_to_past"}), 400, field="productId")
    assert_error(client.post(url, json={}), 400)
    assert dump() == before


def test_legacy_move_to_past_defaults_the_reason_to_dispatched(client, make, count):
    product, _, started = make.live_product()
    body = ok(client.post("/api/products/move-to-past", json={"productId": product["id"]}))
    assert (body["action"], body["reason"], body["newState"]) == (
        "move_to_past",
        "dispatched",
        "OFF",
    )
    assert body["transition"]["reason"] == "dispatched"
    assert job(client, started["id"])["state"] == "OFF"
    assert count("dispatches") == 0  # the legacy call moves; only the dispatch call records one

    again, _, _ = make.live_product()
    body = ok(
        client.post(
            "/api/products/move-to-past", json={"productId": again["id"], "reason": "cancelled"}
        )
    )
    assert body["reason"] == "cancelled"


def test_legacy_move_to_past_errors(client, make, dump):
    product, _, first = make.live_product()
    make.job(product["id"], make.machine()["id"])
    url = "/api/products/move-to-past"
    before = dump()
    assert_error(client.post(url, json={"productId": product["id"], "jobId": first["id"]}), 409)
    assert_error(client.post(url, json={"productId": 99999}), 404)
    assert_error(client.post(url, json={}), 400, field="productId")
    assert_error(client.post(url, json={"productId": product["id"], "action": "x"}), 400)
    assert dump() == before
    assert_error(client.post(url, json={"productId": make.product()["id"]}), 409)  # no job
    ok(client.post(url, json={"productId": product["id"]}))
    assert_error(client.post(url, json={"productId": product["id"]}), 409)


def test_transition_history_newest_first(client, make):
    product, _, _ = make.live_product()
    ok(make.action(product["id"], "move_to_past", reason="one"))
    ok(make.action(product["id"], "reactivate", reason="two"))
    ok(make.action(product["id"], "update_state", newState="OFF", reason="three"))
    body = ok(client.get(f"/api/products/move-to-past?productId={product['id']}"))
    assert set(body) >= {"success", "productId", "currentState", "transitionHistory"}
    assert body["productId"] == product["id"] and body["currentState"] == "OFF"
    history = body["transitionHistory"]
    assert [t["reason"] for t in history[:3]] == ["three", "two", "one"]
    assert [t["action"] for t in history] == [
        "update_state",
        "reactivate",
        "move_to_past",
        "start_job",
    ]
    ids = [t["id"] for t in history]
    assert ids == sorted(ids, reverse=True)
    for t in history:
        assert TRANSITION_FIELDS <= set(t)
    assert_error(client.get("/api/products/move-to-past?productId=99999"), 404)
    assert_error(client.get("/api/products/move-to-past"), 400, field="productId")


def test_lifecycle_document_stages_oldest_first_with_durations(client, make, clock):
    clock.set(datetime(2030, 3, 4, 8, 0, 0))
    product = make.product(name="Input Shaft")
    cut, turn = make.machine(name="Cutting"), make.machine(name="CNC Turning Soft-1")
    j1 = make.job(product["id"], cut["id"], stage="Cutting")
    clock.advance(minutes=10)
    ok(client.post(f"/api/jobs/{j1['id']}/updates", json={"operator": "ana", "quantity": 30}), 201)
    ok(client.post(f"/api/jobs/{j1['id']}/updates", json={"operator": "ana", "quantity": 20}), 201)
    clock.advance(minutes=80, seconds=30)  # 90.5 minutes after the start
    j2 = make.job(product["id"], turn["id"], stage="Soft turning")
    clock.advance(minutes=5)
    ok(client.post(f"/api/jobs/{j2['id']}/updates", json={"operator": "li", "quantity": 7}), 201)

    doc = ok(client.get(f"/api/products/lifecycle?productId={product['id']}"))["lifecycle"]
    assert LIFECYCLE_FIELDS <= set(doc)
    assert (doc["productId"], doc["productName"]) == (product["id"], "Input Shaft")
    assert doc["currentState"] == "ON" and doc["isDispatchable"] is True
    assert doc["totalStages"] == 2
    assert doc["currentMachine"]["id"] == turn["id"]
    assert doc["currentMachine"]["name"] == "CNC Turning Soft-1"
    assert doc["currentJob"]["id"] == j2["id"]
    assert doc["createdAt"] == "2030-03-04T08:00:00.000Z"
    assert is_iso_z(doc["lastUpdated"]) and doc["lastUpdated"] >= doc["createdAt"]

    first, second = doc["stages"]
    for stage in doc["stages"]:
        assert STAGE_FIELDS <= set(stage)
    assert (first["stageNumber"], first["jobId"], first["machineId"]) == (1, j1["id"], cut["id"])
    assert (first["machine"], first["stage"], first["state"]) == ("Cutting", "Cutting", "OFF")
    assert first["timestamp"] == "2030-03-04T08:00:00.000Z"
    assert first["endedAt"] == "2030-03-04T09:30:30.000Z"
    assert first["duration"] == pytest.approx(90.5 * 60)
    assert first["quantityProduced"] == 50
    assert (second["stageNumber"], second["jobId"], second["state"]) == (2, j2["id"], "ON")
    assert second["endedAt"] is None and second["duration"] is None
    assert second["quantityProduced"] == 7

    actions = [t["action"] for t in doc["transitions"]]
    assert actions == ["start_job", "complete_stage", "start_job"]  # oldest first
    ids = [t["id"] for t in doc["transitions"]]
    assert ids == sorted(ids)


def test_lifecycle_of_a_product_with_no_job(client, make):
    product = make.product()
    doc = ok(client.get(f"/api/products/lifecycle?productId={product['id']}"))["lifecycle"]
    assert doc["currentState"] is None and doc["isDispatchable"] is False
    assert doc["stages"] == [] and doc["transitions"] == [] and doc["totalStages"] == 0
    assert doc["currentMachine"] is None and doc["currentJob"] is None


def test_lifecycle_errors(client):
    assert_error(client.get("/api/products/lifecycle?productId=99999"), 404)
    assert_error(client.get("/api/products/lifecycle"), 400, field="productId")
    assert_error(client.get("/api/products/lifecycle?productId=abc"), 400, field="productId")


def test_nothing_is_ever_deleted(client, make, count, dump):
    product, _, first = make.live_product()
    ok(client.post(f"/api/jobs/{first['id']}/updates", json={"operator": "a", "quantity": 5}), 201)
    second = make.job(product["id"], make.machine()["id"])
    ok(client.post(f"/api/jobs/{second['id']}/updates", json={"operator": "b", "quantity": 3}), 201)
    rows = dump()

    ok(make.action(product["id"], "move_to_past"))
    ok(make.action(product["id"], "reactivate"))
    ok(make.action(product["id"], "update_state", newState="OFF"))
    ok(make.action(product["id"], "update_state", newState="ON"))
    ok(client.post("/api/live-products/dispatchable", json={"productId": product["id"]}))

    after = dump()
    for table in ("products", "machines", "jobs", "operator_product_updates", "transitions"):
        kept_ids = {r[0] for r in after[table]}
        assert {r[0] for r in rows[table]} <= kept_ids, table
    assert count("operator_product_updates") == 2
    assert count("jobs", "product_id = :p", p=product["id"]) == 2
    for j, qty in ((first, 5), (second, 3)):
        updates = ok(client.get(f"/api/jobs/{j['id']}/updates"))["updates"]
        assert [u["quantity"] for u in updates] == [qty]
    doc = ok(client.get(f"/api/products/lifecycle?productId={product['id']}"))["lifecycle"]
    assert [s["quantityProduced"] for s in doc["stages"]] == [5, 3]
    assert len(doc["transitions"]) == count("transitions", "product_id = :p", p=product["id"])
    # the transitions before the dispatch are all still there, unchanged
    assert rows["transitions"] == after["transitions"][: len(rows["transitions"])]


def test_the_lifecycle_in_a_transitions_answer_shows_the_machine_as_the_change_left_it(
    client, make
):
    product, machine, _ = make.live_product()
    body = client.post(
        "/api/products/lifecycle", json={"productId": product["id"], "action": "move_to_past"}
    ).get_json()
    assert body["lifecycle"]["currentMachine"]["status"] == "idle"
    assert (
        body["lifecycle"]
        == client.get(f"/api/products/lifecycle?productId={product['id']}").get_json()["lifecycle"]
    )
    again = client.post(
        "/api/products/lifecycle", json={"productId": product["id"], "action": "reactivate"}
    ).get_json()
    assert again["lifecycle"]["currentMachine"]["status"] == "running"

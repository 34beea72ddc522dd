"""The dispatchable list, dispatching, and the ETag that makes polling the list cheap."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from app.common.http import shared_for_etag
from tests.api.conftest import assert_error, comparable, is_iso_z, ok, statements

ITEM_FIELDS = {
    "id",
    "name",
    "code",
    "process",
    "machineId",
    "jobId",
    "stage",
    "status",
    "createdAt",
    "quantityProduced",
}
DISPATCH_FIELDS = {
    "id",
    "productId",
    "jobId",
    "quantity",
    "destination",
    "notes",
    "dispatchedBy",
    "createdAt",
}
URL = "/api/live-products/dispatchable"


def test_dispatchable_lists_live_products_only_with_the_contract_fields(client, make):
    live, machine, job = make.live_product(name="Pinion 18T")
    ok(client.post(f"/api/jobs/{job['id']}/updates", json={"operator": "a", "quantity": 12}), 201)
    past, _, _ = make.live_product()
    ok(make.action(past["id"], "move_to_past"))
    make.product()  # never started

    body = ok(client.get(URL))
    assert body["count"] == 1
    (item,) = body["dispatchableProducts"]
    assert ITEM_FIELDS <= set(item)
    assert (item["id"], item["name"], item["code"]) == (live["id"], "Pinion 18T", live["code"])
    assert (item["process"], item["machineId"]) == (machine["name"], machine["id"])
    assert (item["jobId"], item["stage"], item["status"]) == (job["id"], job["stage"], "ON")
    assert item["createdAt"] == job["createdAt"] and is_iso_z(item["createdAt"])
    assert item["quantityProduced"] == 12


def test_dispatch_records_a_dispatch_and_moves_the_product_to_past(client, make, count):
    product, machine, job = make.live_product()
    ok(client.post(f"/api/jobs/{job['id']}/updates", json={"operator": "a", "quantity": 25}), 201)
    body = ok(
        client.post(
            URL,
            json={
                "productId": product["id"],
                "destination": "Pune Assembly Plant",
                "notes": "two crates",
            },
        )
    )
    assert (body["action"], body["reason"]) == ("move_to_past", "dispatched")
    assert (body["previousState"], body["newState"]) == ("ON", "OFF")
    assert body["transition"]["reason"] == "dispatched"
    assert body["lifecycle"]["currentState"] == "OFF"
    dispatch = body["dispatch"]
    assert DISPATCH_FIELDS <= set(dispatch)
    assert (dispatch["productId"], dispatch["jobId"]) == (product["id"], job["id"])
    assert dispatch["quantity"] == 25  # defaults to what the job produced
    assert (dispatch["destination"], dispatch["notes"]) == ("Pune Assembly Plant", "two crates")
    assert dispatch["dispatchedBy"] == body["transition"]["actor"]
    assert is_iso_z(dispatch["createdAt"])

    assert ok(client.get(URL))["count"] == 0
    assert ok(client.get(f"/api/jobs/{job['id']}"))["job"]["state"] == "OFF"
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"]["status"] == "idle"
    assert ok(client.get(f"/api/dispatches?productId={product['id']}"))["dispatches"] == [dispatch]
    assert count("dispatches") == 1
    assert count("transitions", "action = 'move_to_past' AND reason = 'dispatched'") == 1


def test_dispatch_with_a_quantity_and_the_latest_job_id(client, make):
    product, _, job = make.live_product()
    body = ok(
        client.post(URL, json={"productId": product["id"], "jobId": job["id"], "quantity": 8})
    )
    assert body["dispatch"]["quantity"] == 8


def test_a_second_dispatch_is_409_and_writes_nothing(client, make, dump):
    product, _, _ = make.live_product()
    ok(client.post(URL, json={"productId": product["id"]}))
    before = dump()
    assert_error(client.post(URL, json={"productId": product["id"]}), 409)
    assert dump() == before


def test_dispatch_errors(client, make, dump):
    product, _, first = make.live_product()
    make.job(product["id"], make.machine()["id"])
    never = make.product()
    before = dump()
    assert_error(client.post(URL, json={"productId": product["id"], "jobId": first["id"]}), 409)
    assert_error(client.post(URL, json={"productId": never["id"]}), 409)
    assert_error(client.post(URL, json={"productId": 99999}), 404)
    assert_error(client.post(URL, json={}), 400, field="productId")
    assert_error(client.post(URL, json={"productId": product["id"], "quantity": 0}), 400)
    assert_error(client.post(URL, json={"productId": product["id"], "reason": "x"}), 400)
    assert dump() == before


def test_a_reactivated_product_may_be_dispatched_again(client, make, count):
    product, _, _ = make.live_product()
    ok(client.post(URL, json={"productId": product["id"]}))
    ok(make.action(product["id"], "reactivate", reason="returned for rework"))
    ok(client.post(URL, json={"productId": product["id"]}))
    assert count("dispatches", "product_id = :p", p=product["id"]) == 2


# --- ETag -----------------------------------------------------------------------------------


def etag_of(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers.get("ETag"), "no ETag"
    return response.headers["ETag"]


def assert_not_modified(client, url, etag, *, sent=None):
    response = client.get(url, headers={"If-None-Match": sent or etag})
    assert response.status_code == 304, response.get_data(as_text=True)[:300]
    assert response.get_data() == b""
    assert response.headers["ETag"] == etag


def assert_changed(client, url, etag, *, cold=None) -> str:
    """A 200 with a new ETag; with `cold`, the same answer a worker that never answered gives."""
    response = client.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 200, "the ETag did not change"
    assert response.headers["ETag"] != etag
    assert response.get_json()["success"] is True
    if cold is not None:
        assert comparable(response) == comparable(cold(url)), "a stale shared answer"
    return response.headers["ETag"]


@pytest.mark.parametrize("url", [URL, "/api/dashboard/status"])
def test_etag_answers_304_until_something_changes(client, make, url, cold):
    product, machine, job = make.live_product()
    etag = etag_of(client, url)
    assert_not_modified(client, url, etag)
    assert_not_modified(client, url, etag, sent=f'"other", {etag}')  # one of several
    assert_not_modified(client, url, etag, sent="W/" + etag)  # as a compressing proxy sends it
    assert client.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200

    other = make.machine()
    changes = {
        "operator update": lambda: client.post(
            f"/api/jobs/{job['id']}/updates", json={"operator": "a", "quantity": 1}
        ),
        "move_to_past": lambda: make.action(product["id"], "move_to_past"),
        "reactivate": lambda: make.action(product["id"], "reactivate"),
        "update_state": lambda: make.action(product["id"], "update_state", newState="OFF"),
        "next job": lambda: client.post(
            "/api/jobs", json={"productId": product["id"], "machineId": other["id"]}
        ),
        "rename the live product's machine": lambda: client.patch(
            f"/api/machines/{other['id']}", json={"name": "Renamed"}
        ),
        "dispatch": lambda: client.post(URL, json={"productId": product["id"]}),
    }
    for label, change in changes.items():
        response = change()
        assert response.status_code < 300, (label, response.get_json())
        try:
            etag = assert_changed(client, url, etag, cold=cold)
        except AssertionError as err:
            raise AssertionError(f"after {label}: {err}") from None
        assert_not_modified(client, url, etag)


@pytest.mark.parametrize("url", [URL, "/api/dashboard/status"])
def test_an_unchanged_answer_is_built_once_and_shared(app, client, make, clock, url):
    """After an event every open page asks again: while the ETag holds, a worker answers them
    all from one build, so a repeat 200 runs only the ETag's statements, as a 304 does. The
    dashboard's time is the answer's own."""
    clock.set(datetime(2030, 6, 15, 9, 0))
    make.live_product()
    first = client.get(url)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    clock.advance(minutes=5)
    ok(client.get("/api/me"))  # the token's last use is noted now, not in what is compared
    with statements(app) as for_304:
        assert_not_modified(client, url, etag)
    with statements(app) as for_repeat:
        again = client.get(url)
    assert again.status_code == 200 and again.headers["ETag"] == etag
    assert for_repeat == for_304
    assert comparable(again) == comparable(first)
    if "dashboard" in again.get_json():
        assert again.get_json()["dashboard"]["lastUpdated"] == "2030-06-15T09:05:00.000Z"


def test_dashboard_etag_follows_catalogue_changes_that_send_no_event(client, make, cold, clock):
    url = "/api/dashboard/status"
    machine = make.machine(name="Grinding")  # idle: renaming it touches no live product
    etag = etag_of(client, url)
    make.product()
    etag = assert_changed(client, url, etag, cold=cold)
    make.machine()
    etag = assert_changed(client, url, etag, cold=cold)
    ok(client.patch(f"/api/machines/{machine['id']}", json={"name": "Grinding 2"}))
    etag = assert_changed(client, url, etag, cold=cold)
    board = ok(client.get(url))["dashboard"]["machineStatus"]
    assert "Grinding 2" in [m["name"] for m in board]
    ok(client.patch(f"/api/machines/{machine['id']}", json={"status": "maintenance"}))
    etag = assert_changed(client, url, etag, cold=cold)
    clock.set(datetime(2030, 6, 15, 23, 50))
    for name in ("Grinding 3", "Grinding 4"):  # two renames at one instant of the clock
        ok(client.patch(f"/api/machines/{machine['id']}", json={"name": name}))
        etag = assert_changed(client, url, etag, cold=cold)
    make.live_product()
    etag = etag_of(client, url)
    assert ok(client.get(url))["dashboard"]["stats"]["transitionsToday"] == 1
    clock.advance(minutes=15)  # midnight passed: today's counts start again, with no event
    assert_changed(client, url, etag, cold=cold)
    assert ok(client.get(url))["dashboard"]["stats"]["transitionsToday"] == 0


def test_a_failed_write_keeps_the_etag(client, make):
    product, _, _ = make.live_product()
    etag = etag_of(client, URL)
    assert_error(make.action(product["id"], "reactivate"), 409)
    assert_error(client.post(URL, json={"productId": 99999}), 404)
    assert_not_modified(client, URL, etag)


def test_a_build_serves_everyone_who_asked_before_it_began(app):
    """Events faster than a build: requests that waited on a build for an older ETag take the
    next build's answer, which began after they asked, instead of each building in turn."""
    first_began, release = threading.Event(), threading.Event()
    builds: list[str] = []

    def build(label: str):
        def run() -> str:
            builds.append(label)
            if label == "e1":
                first_began.set()
                assert release.wait(10)
            return f"answer {len(builds)}"

        return run

    answers: dict[str, str] = {}

    def ask(etag: str) -> None:
        with app.app_context():
            answers[etag] = shared_for_etag("test", etag, build(etag))

    first = threading.Thread(target=ask, args=("e1",))
    first.start()
    assert first_began.wait(10)
    waiting = [threading.Thread(target=ask, args=(etag,)) for etag in ("e2", "e3")]
    for t in waiting:
        t.start()
    time.sleep(0.2)  # both are waiting for the first build
    release.set()
    for t in [first, *waiting]:
        t.join(10)
    assert answers["e1"] == "answer 1"
    assert len(builds) == 2, builds  # e1's, then one for both e2 and e3
    assert answers["e2"] == answers["e3"] == "answer 2"

"""Idempotency-Key: a repeat answers the first response and writes nothing."""

from __future__ import annotations

import itertools

import pytest

from tests.api.conftest import assert_error, ok

_keys = itertools.count(1)


def key() -> dict:
    return {"Idempotency-Key": f"key-{next(_keys)}"}


def send_twice(client, method, url, body, dump):
    """The first call, then the same call again; the repeat must write nothing."""
    headers = key()
    first = getattr(client, method)(url, json=body, headers=headers)
    rows = dump()
    again = getattr(client, method)(url, json=body, headers=headers)
    assert dump() == rows, f"the repeat of {method} {url} wrote something"
    assert again.status_code == first.status_code
    assert again.get_json() == first.get_json()
    assert again.mimetype == "application/json"
    assert again.headers.get("Idempotent-Replayed") == "true"
    return first, again


def test_every_write_replays_its_first_response(client, make, dump):
    product, machine, job = make.live_product()
    other = make.machine()
    spare = make.product()
    writes = [
        ("post", "/api/products", {"name": "Hub Sleeve", "code": "TRK-9"}, 201),
        ("post", "/api/machines", {"name": "Saw", "code": "SAW-1"}, 201),
        ("patch", f"/api/machines/{other['id']}", {"name": "Saw 2"}, 200),
        ("post", f"/api/jobs/{job['id']}/updates", {"operator": "a", "quantity": 3}, 201),
        ("post", "/api/jobs", {"productId": spare["id"], "machineId": other["id"]}, 201),
        (
            "post",
            "/api/products/lifecycle",
            {"productId": product["id"], "action": "move_to_past"},
            200,
        ),
        (
            "post",
            "/api/products/lifecycle",
            {"productId": product["id"], "action": "reactivate"},
            200,
        ),
        ("post", "/api/products/move-to-past", {"productId": product["id"]}, 200),
        (
            "post",
            "/api/products/lifecycle",
            {"productId": product["id"], "action": "update_state", "newState": "ON"},
            200,
        ),
        ("post", "/api/live-products/dispatchable", {"productId": product["id"]}, 200),
    ]
    for method, url, body, status in writes:
        first, _ = send_twice(client, method, url, body, dump)
        assert first.status_code == status, (url, first.get_json())


def test_a_replayed_start_job_makes_one_job(client, make, count):
    product, machine = make.product(), make.machine()
    headers = key()
    body = {"productId": product["id"], "machineId": machine["id"], "stage": "Cutting"}
    first = client.post("/api/jobs", json=body, headers=headers)
    again = client.post("/api/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_data() == first.get_data()
    assert count("jobs") == 1 and count("transitions") == 1
    # the same request without a key is a new request: the same stage again is refused
    assert_error(client.post("/api/jobs", json=body), 409)


def test_a_repeat_of_a_refused_request_is_refused_the_same_way(client, make, dump):
    product, machine = make.product(), make.machine()
    move = {"productId": product["id"], "action": "move_to_past"}
    headers = key()
    first = client.post("/api/products/lifecycle", json=move, headers=headers)
    assert_error(first, 409)  # no job yet
    make.job(product["id"], machine["id"])  # now it could succeed...
    rows = dump()
    again = client.post("/api/products/lifecycle", json=move, headers=headers)
    assert_error(again, 409)  # ...but the key answers what it answered
    assert again.get_json() == first.get_json()
    assert dump() == rows

    for body, status in (
        ({"productId": 99999, "action": "move_to_past"}, 404),
        ({"productId": product["id"], "action": "explode"}, 400),
        ({"productId": "abc", "action": "move_to_past"}, 400),
    ):
        first, again = send_twice(client, "post", "/api/products/lifecycle", body, dump)
        assert_error(first, status)
        assert_error(again, status)


def test_the_same_key_with_another_body_or_path_is_400(client, make, dump):
    product, _, _ = make.live_product()
    headers = key()
    ok(client.post("/api/products", json={"name": "A", "code": "A-1"}, headers=headers), 201)
    rows = dump()
    assert_error(
        client.post("/api/products", json={"name": "B", "code": "B-1"}, headers=headers), 400
    )
    assert_error(
        client.post(
            "/api/products/lifecycle",
            json={"productId": product["id"], "action": "move_to_past"},
            headers=headers,
        ),
        400,
    )
    assert dump() == rows


def test_a_key_is_forgotten_when_the_server_failed(client, monkeypatch, count):
    from app.lifecycle import service

    real = service.create_product
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise RuntimeError("the disk hiccuped")
        return real(**kwargs)

    monkeypatch.setattr(service, "create_product", flaky)
    headers = key()
    body = {"name": "Retry", "code": "R-1"}
    assert_error(client.post("/api/products", json=body, headers=headers), 500)
    assert count("products") == 0
    retried = ok(client.post("/api/products", json=body, headers=headers), 201)
    assert retried["product"]["code"] == "R-1"
    again = client.post("/api/products", json=body, headers=headers)
    assert again.get_json() == retried and count("products") == 1


@pytest.mark.parametrize("url", ["/api/products", "/api/live-products/dispatchable"])
def test_reads_ignore_the_key(client, make, url):
    make.live_product()
    headers = key()
    first = ok(client.get(url, headers=headers))
    make.live_product()
    second = ok(client.get(url, headers=headers))
    assert first != second

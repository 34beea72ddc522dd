"""Jobs (a product's stages), operator output, and dispatch records."""

from __future__ import annotations

import json

from tests.api.conftest import assert_error, is_iso_z, ok

JOB_FIELDS = {
    "id",
    "productId",
    "machineId",
    "stage",
    "operator",
    "quantityPlanned",
    "state",
    "createdAt",
    "updatedAt",
    "endedAt",
}
UPDATE_FIELDS = {
    "id",
    "jobId",
    "productId",
    "operator",
    "quantity",
    "scrapQuantity",
    "note",
    "createdAt",
}


def machine_status(client, machine_id) -> str:
    return ok(client.get(f"/api/machines/{machine_id}"))["machine"]["status"]


def events(sql) -> list[tuple[str, dict]]:
    return [
        (type_, payload if isinstance(payload, dict) else json.loads(payload))
        for type_, payload in sql("SELECT type, payload FROM events ORDER BY id")
    ]


def test_start_job_answers_201_on_and_the_product_goes_live(client, make, sql):
    product = make.product()
    machine = make.machine()
    body = ok(
        client.post(
            "/api/jobs",
            json={
                "productId": str(product["id"]),  # ids may come as strings of digits
                "machineId": machine["id"],
                "stage": "Cutting",
                "operator": "ana",
                "quantityPlanned": 100,
            },
        ),
        201,
    )
    job = body["job"]
    assert JOB_FIELDS <= set(job)
    assert job["productId"] == product["id"] and job["machineId"] == machine["id"]
    assert (job["stage"], job["operator"], job["quantityPlanned"]) == ("Cutting", "ana", 100)
    assert job["state"] == "ON" and job["endedAt"] is None
    assert is_iso_z(job["createdAt"]) and is_iso_z(job["updatedAt"])
    assert ok(client.get(f"/api/jobs/{job['id']}"))["job"] == job

    assert ok(client.get(f"/api/products/{product['id']}"))["product"]["state"] == "ON"
    assert machine_status(client, machine["id"]) == "running"
    live = ok(client.get("/api/live-products/dispatchable"))
    assert [(p["id"], p["jobId"]) for p in live["dispatchableProducts"]] == [
        (product["id"], job["id"])
    ]
    types = [t for t, _ in events(sql)]
    assert "job_started" in types and "dispatchable_products_update" in types
    started = next(p for t, p in events(sql) if t == "job_started")
    assert started["productId"] == product["id"] and started["jobId"] == job["id"]


def test_stage_and_operator_and_plan_are_optional(client, make):
    product, machine = make.product(), make.machine()
    job = ok(
        client.post("/api/jobs", json={"productId": product["id"], "machineId": machine["id"]}),
        201,
    )["job"]
    assert (job["stage"], job["operator"], job["quantityPlanned"]) == (None, None, None)


def test_next_stage_finishes_the_running_job_in_the_same_write(client, make, sql, count):
    product, m1, first = make.live_product()
    m2 = make.machine()
    second = make.job(product["id"], m2["id"], stage="Turning")

    old = ok(client.get(f"/api/jobs/{first['id']}"))["job"]
    assert old["state"] == "OFF" and is_iso_z(old["endedAt"])
    assert old["endedAt"] == second["createdAt"]  # one transaction, one clock reading
    assert second["state"] == "ON"

    # the product moved on and stayed live
    assert ok(client.get(f"/api/products/{product['id']}"))["product"]["state"] == "ON"
    (item,) = ok(client.get("/api/live-products/dispatchable"))["dispatchableProducts"]
    assert (item["jobId"], item["machineId"], item["stage"]) == (second["id"], m2["id"], "Turning")
    assert item["process"] == m2["name"]

    # machines follow their ON jobs
    assert machine_status(client, m1["id"]) == "idle"
    assert machine_status(client, m2["id"]) == "running"

    # the finished stage is in the audit trail, not a move to past
    history = ok(client.get(f"/api/products/move-to-past?productId={product['id']}"))
    actions = [t["action"] for t in history["transitionHistory"]]
    assert "move_to_past" not in actions
    assert count("jobs", "product_id = :p AND state = 'ON'", p=product["id"]) == 1


def test_next_stage_on_the_same_machine_keeps_it_running(client, make):
    product, machine, first = make.live_product()
    make.job(product["id"], machine["id"], stage="second pass")
    assert machine_status(client, machine["id"]) == "running"
    assert ok(client.get(f"/api/jobs/{first['id']}"))["job"]["state"] == "OFF"


def test_a_machine_with_two_products_stays_running_until_both_leave(client, make):
    machine = make.machine()
    a, b = make.product(), make.product()
    make.job(a["id"], machine["id"])
    make.job(b["id"], machine["id"])
    other = make.machine()
    make.job(a["id"], other["id"])
    assert machine_status(client, machine["id"]) == "running"  # b still runs on it
    ok(make.action(b["id"], "move_to_past"))
    assert machine_status(client, machine["id"]) == "idle"
    ok(make.action(b["id"], "reactivate"))
    assert machine_status(client, machine["id"]) == "running"


def test_same_stage_on_the_same_machine_twice_is_409(client, make, dump):
    product, machine, job = make.live_product()
    before = dump()
    assert_error(
        client.post(
            "/api/jobs",
            json={"productId": product["id"], "machineId": machine["id"], "stage": job["stage"]},
        ),
        409,
    )
    assert dump() == before


def test_a_job_cannot_start_on_a_machine_in_maintenance_or_offline(client, make, dump):
    product = make.product()
    for status in ("maintenance", "offline"):
        machine = make.machine(status=status)
        before = dump()
        assert_error(
            client.post("/api/jobs", json={"productId": product["id"], "machineId": machine["id"]}),
            409,
        )
        assert dump() == before


def test_a_past_product_goes_live_again_with_a_new_job(client, make):
    product, _, first = make.live_product()
    ok(make.action(product["id"], "move_to_past"))
    second = make.job(product["id"], make.machine()["id"])
    assert ok(client.get(f"/api/products/{product['id']}"))["product"]["state"] == "ON"
    assert ok(client.get(f"/api/jobs/{first['id']}"))["job"]["state"] == "OFF"
    assert second["state"] == "ON"


def test_start_job_unknown_product_or_machine_is_404(client, make, dump):
    product, machine = make.product(), make.machine()
    before = dump()
    assert_error(
        client.post("/api/jobs", json={"productId": 99999, "machineId": machine["id"]}), 404
    )
    assert_error(
        client.post("/api/jobs", json={"productId": product["id"], "machineId": 99999}), 404
    )
    assert_error(
        client.post("/api/jobs", json={"machineId": machine["id"]}), 400, field="productId"
    )
    assert_error(
        client.post("/api/jobs", json={"productId": product["id"]}), 400, field="machineId"
    )
    assert dump() == before


def test_jobs_list_filters_and_pages(client, make):
    p1, m1, j1 = make.live_product()
    m2 = make.machine()
    j2 = make.job(p1["id"], m2["id"])  # j1 goes OFF
    p2 = make.product()
    j3 = make.job(p2["id"], m1["id"])

    def ids(query):
        return [j["id"] for j in ok(client.get(f"/api/jobs{query}"))["jobs"]]

    assert ids("") == [j3["id"], j2["id"], j1["id"]]
    assert ids("?state=ON") == [j3["id"], j2["id"]]
    assert ids("?state=OFF") == [j1["id"]]
    assert ids(f"?productId={p1['id']}") == [j2["id"], j1["id"]]
    assert ids(f"?machineId={m1['id']}") == [j3["id"], j1["id"]]
    assert ids(f"?productId={p1['id']}&state=ON") == [j2["id"]]
    assert ids("?productId=99999") == []

    first = ok(client.get("/api/jobs?limit=2"))
    assert len(first["jobs"]) == 2 and first["nextCursor"]
    rest = ok(client.get(f"/api/jobs?limit=2&cursor={first['nextCursor']}"))
    assert [j["id"] for j in rest["jobs"]] == [j1["id"]] and rest["nextCursor"] is None


def test_unknown_job_is_404(client):
    assert_error(client.get("/api/jobs/99999"), 404)
    assert_error(client.get("/api/jobs/99999/updates"), 404)
    assert_error(client.post("/api/jobs/99999/updates", json={"operator": "a", "quantity": 1}), 404)


def test_operator_update_answers_201_and_sums_into_quantity_produced(client, make, sql):
    product, _, job = make.live_product()
    body = ok(
        client.post(
            f"/api/jobs/{job['id']}/updates",
            json={"operator": "ravi", "quantity": 40, "scrapQuantity": 2, "note": "first-off ok"},
        ),
        201,
    )
    update = body["update"]
    assert UPDATE_FIELDS <= set(update)
    assert (update["jobId"], update["productId"]) == (job["id"], product["id"])
    assert (update["operator"], update["quantity"], update["scrapQuantity"]) == ("ravi", 40, 2)
    assert update["note"] == "first-off ok" and is_iso_z(update["createdAt"])
    second = ok(
        client.post(f"/api/jobs/{job['id']}/updates", json={"operator": "ravi", "quantity": 2}),
        201,
    )["update"]
    assert second["scrapQuantity"] == 0 and second["note"] is None

    assert ok(client.get(f"/api/jobs/{job['id']}"))["job"]["quantityProduced"] == 42
    (item,) = ok(client.get("/api/live-products/dispatchable"))["dispatchableProducts"]
    assert item["quantityProduced"] == 42
    stage = ok(client.get(f"/api/products/lifecycle?productId={product['id']}"))["lifecycle"][
        "stages"
    ][0]
    assert stage["quantityProduced"] == 42
    logged = [p for t, p in events(sql) if t == "operator_update_logged"]
    assert [p["quantity"] for p in logged] == [40, 2]
    assert logged[-1]["productId"] == product["id"] and logged[-1]["quantityProduced"] == 42

    listed = ok(client.get(f"/api/jobs/{job['id']}/updates"))
    assert [u["id"] for u in listed["updates"]] == [second["id"], update["id"]]
    assert listed["nextCursor"] is None
    page = ok(client.get(f"/api/jobs/{job['id']}/updates?limit=1"))
    assert [u["id"] for u in page["updates"]] == [second["id"]]
    rest = ok(client.get(f"/api/jobs/{job['id']}/updates?limit=1&cursor={page['nextCursor']}"))
    assert [u["id"] for u in rest["updates"]] == [update["id"]]


def test_operator_update_on_an_off_job_is_409(client, make, dump):
    product, _, first = make.live_product()
    make.job(product["id"], make.machine()["id"])  # first is now OFF
    before = dump()
    assert_error(
        client.post(f"/api/jobs/{first['id']}/updates", json={"operator": "a", "quantity": 1}), 409
    )
    ok(make.action(product["id"], "move_to_past"))
    latest = ok(client.get(f"/api/jobs?productId={product['id']}&limit=1"))["jobs"][0]
    before = dump()
    assert_error(
        client.post(f"/api/jobs/{latest['id']}/updates", json={"operator": "a", "quantity": 1}),
        409,
    )
    assert dump() == before


def test_operator_update_needs_a_positive_whole_quantity_and_an_operator(client, make, dump):
    _, _, job = make.live_product()
    url = f"/api/jobs/{job['id']}/updates"
    before = dump()
    for bad in (0, -1, 1.5, "3", True, None):
        assert_error(
            client.post(url, json={"operator": "a", "quantity": bad}), 400, field="quantity"
        )
    assert_error(client.post(url, json={"operator": "a"}), 400, field="quantity")
    assert_error(client.post(url, json={"quantity": 1}), 400, field="operator")
    assert_error(client.post(url, json={"operator": "", "quantity": 1}), 400, field="operator")
    assert_error(
        client.post(url, json={"operator": "a", "quantity": 1, "scrapQuantity": -1}),
        400,
        field="scrapQuantity",
    )
    assert dump() == before


def test_a_running_total_too_large_to_store_is_refused_not_a_500(client, make, dump):
    _, _, job = make.live_product()
    url = f"/api/jobs/{job['id']}/updates"
    for _ in range(2):
        ok(client.post(url, json={"operator": "a", "quantity": 1_000_000_000}), 201)
    before = dump()
    assert_error(client.post(url, json={"operator": "a", "quantity": 1_000_000_000}), 400)
    assert dump() == before
    assert ok(client.get(f"/api/jobs/{job['id']}"))["job"]["quantityProduced"] == 2_000_000_000


def test_dispatches_list_by_product(client, make):
    a, _, _ = make.live_product()
    b, _, _ = make.live_product()
    da = ok(client.post("/api/live-products/dispatchable", json={"productId": a["id"]}))["dispatch"]
    db_ = ok(client.post("/api/live-products/dispatchable", json={"productId": b["id"]}))[
        "dispatch"
    ]
    everything = ok(client.get("/api/dispatches"))
    assert [d["id"] for d in everything["dispatches"]] == [db_["id"], da["id"]]
    assert everything["nextCursor"] is None
    only_a = ok(client.get(f"/api/dispatches?productId={a['id']}"))["dispatches"]
    assert only_a == [da]
    assert ok(client.get("/api/dispatches?productId=99999"))["dispatches"] == []
    page = ok(client.get("/api/dispatches?limit=1"))
    assert len(page["dispatches"]) == 1 and page["nextCursor"]

"""Products and machines: create, read, list, page, rename, status; and their error codes."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_error, is_iso_z, ok

PRODUCT_FIELDS = {"id", "name", "code", "description", "createdAt"}
MACHINE_FIELDS = {"id", "name", "code", "status", "createdAt", "updatedAt"}


def test_create_product_answers_201_with_the_contract_fields(client):
    body = ok(
        client.post(
            "/api/products",
            json={"name": "  Input Shaft  ", "code": "TRK-1", "description": "42CrMo4"},
        ),
        201,
    )
    product = body["product"]
    assert PRODUCT_FIELDS <= set(product)
    assert isinstance(product["id"], int)
    assert product["name"] == "Input Shaft"  # trimmed
    assert product["code"] == "TRK-1"
    assert product["description"] == "42CrMo4"
    assert product["state"] is None  # no job yet
    assert is_iso_z(product["createdAt"])

    again = ok(client.get(f"/api/products/{product['id']}"))
    assert again["product"] == product


def test_description_is_optional(client):
    product = ok(client.post("/api/products", json={"name": "A", "code": "A"}), 201)["product"]
    assert product["description"] is None


def test_duplicate_product_code_is_409_and_writes_nothing(client, make, dump):
    make.product(code="DUP")
    before = dump()
    assert_error(client.post("/api/products", json={"name": "Other", "code": "DUP"}), 409)
    assert dump() == before


def test_unknown_product_is_404(client):
    assert_error(client.get("/api/products/999"), 404)
    assert_error(client.get("/api/products/0"), 404)
    assert_error(client.get("/api/products/abc"), 404)


def test_products_list_newest_first_and_pages_with_an_opaque_cursor(client, make):
    ids = [make.product()["id"] for _ in range(5)]
    first = ok(client.get("/api/products?limit=2"))
    assert [p["id"] for p in first["products"]] == [ids[4], ids[3]]
    assert isinstance(first["nextCursor"], str)
    assert not first["nextCursor"].isdigit()  # opaque, not a bare id
    seen = [p["id"] for p in first["products"]]
    cursor = first["nextCursor"]
    while cursor:
        page = ok(client.get(f"/api/products?limit=2&cursor={cursor}"))
        seen += [p["id"] for p in page["products"]]
        cursor = page["nextCursor"]
    assert seen == ids[::-1]

    whole = ok(client.get("/api/products"))
    assert [p["id"] for p in whole["products"]] == ids[::-1]
    assert whole["nextCursor"] is None
    assert ok(client.get("/api/products?limit=500"))["nextCursor"] is None
    exact = ok(client.get("/api/products?limit=5"))
    assert len(exact["products"]) == 5 and exact["nextCursor"] is None


def test_products_list_filters_live_and_past(client, make):
    live, _, _ = make.live_product()
    past, _, _ = make.live_product()
    make.product()  # no job: neither
    ok(make.action(past["id"], "move_to_past"))
    assert [p["id"] for p in ok(client.get("/api/products?state=ON"))["products"]] == [live["id"]]
    assert [p["id"] for p in ok(client.get("/api/products?state=OFF"))["products"]] == [past["id"]]
    assert_error(client.get("/api/products?state=live"), 400, field="state")


def test_create_machine_answers_201_idle_with_the_contract_fields(client):
    machine = ok(client.post("/api/machines", json={"name": "Cutting", "code": "CUT-01"}), 201)[
        "machine"
    ]
    assert MACHINE_FIELDS <= set(machine)
    assert machine["status"] == "idle"
    assert is_iso_z(machine["createdAt"]) and is_iso_z(machine["updatedAt"])
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"] == machine


@pytest.mark.parametrize("status", ["maintenance", "offline", "idle"])
def test_a_machine_may_start_in_a_manual_status(client, status):
    machine = ok(
        client.post("/api/machines", json={"name": "Grinding", "code": "G", "status": status}), 201
    )["machine"]
    assert machine["status"] == status


def test_a_machine_cannot_be_created_running(client, count):
    assert_error(
        client.post("/api/machines", json={"name": "X", "code": "X", "status": "running"}),
        400,
        field="status",
    )
    assert count("machines") == 0


def test_duplicate_machine_code_is_409_and_writes_nothing(client, make, dump):
    make.machine(code="CUT-01")
    before = dump()
    assert_error(client.post("/api/machines", json={"name": "Saw", "code": "CUT-01"}), 409)
    assert dump() == before


def test_machines_list_and_page(client, make):
    ids = [make.machine()["id"] for _ in range(3)]
    first = ok(client.get("/api/machines?limit=2"))
    assert [m["id"] for m in first["machines"]] == [ids[2], ids[1]]
    rest = ok(client.get(f"/api/machines?limit=2&cursor={first['nextCursor']}"))
    assert [m["id"] for m in rest["machines"]] == [ids[0]]
    assert rest["nextCursor"] is None


def test_unknown_machine_is_404(client):
    assert_error(client.get("/api/machines/42"), 404)
    assert_error(client.patch("/api/machines/42", json={"status": "offline"}), 404)


def test_patch_machine_renames_and_sets_status(client, make, sql):
    machine = make.machine(name="Lathe")
    renamed = ok(client.patch(f"/api/machines/{machine['id']}", json={"name": "Lathe 2"}))
    assert renamed["machine"]["name"] == "Lathe 2"
    assert renamed["machine"]["status"] == "idle"

    down = ok(client.patch(f"/api/machines/{machine['id']}", json={"status": "maintenance"}))
    assert down["machine"]["status"] == "maintenance"
    events = sql("SELECT type, payload FROM events ORDER BY id")
    assert [e[0] for e in events] == ["machine_status_changed"]

    # idle hands the machine back to its jobs: no ON job, so idle
    back = ok(client.patch(f"/api/machines/{machine['id']}", json={"status": "idle"}))
    assert back["machine"]["status"] == "idle"
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"]["status"] == "idle"


def test_setting_a_busy_machine_idle_gives_it_back_to_its_running_job(client, make):
    _, machine, _ = make.live_product()
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"]["status"] == "running"
    ok(client.patch(f"/api/machines/{machine['id']}", json={"status": "offline"}))
    back = ok(client.patch(f"/api/machines/{machine['id']}", json={"status": "idle"}))
    assert back["machine"]["status"] == "running"


def test_patch_machine_status_change_is_broadcast(client, make, sql):
    machine = make.machine()
    ok(client.patch(f"/api/machines/{machine['id']}", json={"status": "offline"}))
    ((type_, payload),) = sql("SELECT type, payload FROM events")
    assert type_ == "machine_status_changed"
    payload = payload if isinstance(payload, dict) else __import__("json").loads(payload)
    assert payload["machineId"] == machine["id"]
    assert payload["status"] == "offline"


def test_patch_machine_with_nothing_to_change_is_400(client, make, dump):
    machine = make.machine()
    before = dump()
    assert_error(client.patch(f"/api/machines/{machine['id']}", json={}), 400)
    assert_error(client.patch(f"/api/machines/{machine['id']}", json={"status": "broken"}), 400)
    assert_error(client.patch(f"/api/machines/{machine['id']}", json={"code": "NEW"}), 400)
    assert dump() == before


def test_methods_the_catalogue_does_not_have_are_405(client, make):
    product = make.product()
    assert_error(client.delete(f"/api/products/{product['id']}"), 405)
    assert_error(client.put(f"/api/products/{product['id']}", json={"name": "x"}), 405)
    assert_error(client.patch("/api/products", json={}), 405)
    assert_error(client.delete("/api/machines"), 405)

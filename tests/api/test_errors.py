"""Whatever goes wrong, /api/* answers the JSON envelope: never HTML, never a stack trace."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from tests.api.conftest import assert_error, ok


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request) -> str:
    """SQLite only: nothing here depends on the database behind the app."""
    return request.param


def test_a_bug_is_a_500_envelope_without_a_trace(client, make, monkeypatch, count):
    from app.lifecycle import reads, service

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals: /etc/passwd")

    product, _, _ = make.live_product()
    monkeypatch.setattr(reads, "lifecycle", boom)
    monkeypatch.setattr(service, "create_machine", boom)
    for response in (
        client.get(f"/api/products/lifecycle?productId={product['id']}"),
        client.post("/api/machines", json={"name": "X", "code": "X"}),
    ):
        body = assert_error(response, 500)
        assert "secret" not in response.get_data(as_text=True)
        assert "RuntimeError" not in body["error"]
    assert count("machines") == 1


def test_a_database_that_does_not_answer_is_a_503(client, make, monkeypatch):
    from app.lifecycle import service

    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(service, "dispatchable_json", down)
    body = assert_error(client.get("/api/live-products/dispatchable"), 503)
    assert "connection refused" not in body["error"]


def test_validation_errors_name_each_field(client):
    body = assert_error(
        client.post("/api/jobs", json={"productId": "abc", "machineId": -1, "colour": "red"}),
        400,
    )
    assert set(body["details"]) == {"productId", "machineId", "colour"}
    assert all(isinstance(m, str) and m for m in body["details"].values())
    assert "productId" in body["error"]  # one human sentence that says what is wrong


def test_domain_errors_say_what_is_wrong(client, make):
    product, _, _ = make.live_product()
    ok(make.action(product["id"], "move_to_past"))
    body = assert_error(make.action(product["id"], "move_to_past"), 409)
    assert product["name"] in body["error"]
    body = assert_error(client.get("/api/products/99999"), 404)
    assert "99999" in body["error"]

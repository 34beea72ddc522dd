def test_a_product_goes_live_then_past_and_back(client, make):
    product, machine, job = make.live_product()
    assert client.get("/api/live-products/dispatchable").get_json()["count"] == 1
    r = make.action(product["id"], "move_to_past", reason="scrapped batch")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["newState"] == "OFF"
    assert client.get("/api/live-products/dispatchable").get_json()["count"] == 0
    r = make.action(product["id"], "reactivate")
    assert r.status_code == 200
    assert (
        client.get("/api/live-products/dispatchable").get_json()["dispatchableProducts"][0]["id"]
        == product["id"]
    )

"""The dispatch page's batch dispatch in a real browser: tick several, one destination, one request."""

from __future__ import annotations

import pytest

from tests.browser.conftest import api, browser, open_page, screenshot, stack  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

expect = pytest.importorskip("playwright.sync_api").expect


def test_batch_dispatch_from_the_dispatch_page(stack, api, open_page, screenshot):  # noqa: F811
    first, second, third = (api.live_product() for _ in range(3))
    api.post("/api/products/lifecycle", {"productId": third["id"], "action": "move_to_past"}, 200)
    page = open_page(stack.hosts[0].url + "/dispatch", "dmitri")
    box = page.get_by_test_id("batch-dispatch")
    for product in (first, second):
        item = box.locator(f'[data-testid="batch-item"][value="{product["id"]}"]')
        expect(item).to_have_count(1)
        item.check()
    expect(box.locator(f'[value="{third["id"]}"]')).to_have_count(0)
    expect(page.get_by_test_id("batch-submit")).to_have_text("Dispatch 2 selected")
    page.get_by_test_id("batch-destination").fill("Dock 9")
    screenshot(page, "batch-selected")
    page.get_by_test_id("batch-submit").click()

    expect(page.get_by_test_id("notice-region")).to_contain_text("Dispatched 2 of 2")
    for product in (first, second):
        expect(box.locator(f'[value="{product["id"]}"]')).to_have_count(0, timeout=3000)
        expect(
            page.get_by_test_id("product-select").locator(f'option[value="{product["id"]}"]')
        ).to_have_count(0)
    expect(page.get_by_test_id("recent-dispatches")).to_contain_text("Dock 9")
    dispatched = api.get("/api/dispatches?limit=5")["dispatches"]
    assert {d["productId"] for d in dispatched if d["destination"] == "Dock 9"} == {
        first["id"],
        second["id"],
    }


def test_operators_see_no_batch_dispatch(stack, open_page):  # noqa: F811
    page = open_page(stack.hosts[0].url + "/dispatch", "olga")
    expect(page.get_by_test_id("batch-dispatch")).to_have_count(0)

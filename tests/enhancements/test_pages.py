"""The new page parts in a real browser: batch dispatch, dashboard analytics, webhooks page."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

expect = pytest.importorskip("playwright.sync_api").expect


def test_batch_dispatch_from_the_dispatch_page(stack, api, open_page, screenshot):
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


def test_operators_see_no_batch_dispatch(stack, open_page):
    page = open_page(stack.hosts[0].url + "/dispatch", "olga")
    expect(page.get_by_test_id("batch-dispatch")).to_have_count(0)


def test_dashboard_shows_the_analytics_charts(stack, open_page, screenshot):
    page = open_page(stack.hosts[0].url + "/dashboard", "olga")
    box = page.get_by_test_id("analytics")
    # the demo factory's history: stages ended, products dispatched, output logged
    expect(box.get_by_test_id("stage-chart")).to_be_visible()
    expect(box.get_by_test_id("machine-chart")).to_be_visible()
    expect(box.get_by_test_id("output-chart")).to_be_visible()
    expect(box.get_by_test_id("dispatch-chart")).to_be_visible()
    expect(box.get_by_test_id("lead-time")).to_contain_text("Median")
    assert box.get_by_test_id("stage-chart").locator("rect").count() >= 2
    links = box.get_by_test_id("report-links").locator("a")
    expect(links).to_have_count(6)
    href = links.first.get_attribute("href")
    assert href.startswith("/api/reports/transitions.csv?from=")
    response = page.request.get(stack.hosts[0].url + href)
    assert response.status == 200 and response.text().lstrip("\ufeff").startswith("id,")
    screenshot(page, "dashboard-analytics")

    # a range with nothing in it
    box.get_by_test_id("analytics-from").fill("2001-01-01")
    box.get_by_test_id("analytics-to").fill("2001-01-31")
    box.get_by_role("button", name="Show").click()
    expect(box.get_by_test_id("lead-time")).to_have_text("No dispatch in this range.")


def test_webhooks_page(stack, api, open_page, screenshot):
    page = open_page(stack.hosts[0].url + "/webhooks", "mira", wait_live=False)
    page.get_by_test_id("webhook-url").fill("https://example.com/trackopz")
    page.get_by_test_id("type-job_started").check()
    expect(page.get_by_test_id("type-*")).not_to_be_checked()
    page.get_by_test_id("webhook-submit").click()
    expect(page.get_by_test_id("secret-value")).to_contain_text("whsec_")
    row = page.get_by_test_id("webhook-row").filter(has_text="https://example.com/trackopz")
    expect(row).to_contain_text("Job started")
    expect(row.get_by_test_id("webhook-state")).to_have_text("On")

    page.get_by_test_id("webhook-url").fill(stack.hosts[0].url + "/api/x")
    page.get_by_test_id("webhook-submit").click()
    expect(page.get_by_test_id("error-region")).to_contain_text("TrackOPZ itself")

    row.get_by_test_id("webhook-toggle").click()
    expect(row.get_by_test_id("webhook-state")).to_have_text("Off")
    row.get_by_test_id("webhook-log").click()
    expect(page.get_by_test_id("delivery-log")).to_be_visible()
    screenshot(page, "webhooks")

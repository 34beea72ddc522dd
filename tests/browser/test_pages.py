"""The three pages in a real browser: changes by anyone reach every open page, without reloads."""

from __future__ import annotations

import re

import pytest

from tests.support.browser import Api

pytestmark = [pytest.mark.browser, pytest.mark.slow]

expect = pytest.importorskip("playwright.sync_api").expect

STREAM = "**/api/live-products/dispatchable/stream*"
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def option(page, product_id):
    return page.get_by_test_id("product-select").locator(f'option[value="{product_id}"]')


def card(page, tab: str, product_id):
    return page.get_by_test_id(f"panel-{tab}").locator(f'[data-product-id="{product_id}"]')


def assert_not_reloaded(*pages):
    for page in pages:
        assert page.evaluate("window.__notReloaded === true"), f"{page.url} was reloaded"


def test_the_dashboard_counts_its_own_screen_before_any_event(stack, open_page):
    """Its first figures may be read before its stream is up; once it is, the page counts
    itself among the live screens without waiting for an event."""
    dashboard = open_page(stack.hosts[0].url + "/dashboard", "mira")
    screens = dashboard.locator("[data-stat=connectedClients] dd")
    expect(screens).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=3000)


def test_the_dashboard_shows_within_a_minute_what_sends_no_event(stack, api, open_page):
    """A product added and another screen opened send no event: an open dashboard shows both
    within a minute, without a reload."""
    url = stack.hosts[0].url + "/dashboard"
    dashboard = open_page(url, "mira", context_setup=lambda context: context.clock.install())
    screens = dashboard.locator("[data-stat=connectedClients] dd")
    products = dashboard.locator("[data-stat=totalProducts] dd")
    expect(screens).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=3000)
    dashboard.wait_for_timeout(500)  # the refresh after its stream came up
    shown = int(screens.inner_text()), int(products.inner_text())
    open_page(url, "mira")
    api.post("/api/products", {"name": "Quiet Shaft", "code": "Q-SHAFT"}, 201)
    dashboard.wait_for_timeout(1000)
    assert (int(screens.inner_text()), int(products.inner_text())) == shown, "an event came"
    dashboard.clock.fast_forward("01:01")
    expect(products).to_have_text(str(shown[1] + 1), timeout=3000)
    expect(screens).to_have_text(str(shown[0] + 1), timeout=3000)
    assert_not_reloaded(dashboard)


def test_moved_to_past_on_workpanel_leaves_the_dispatch_dropdown(stack, api, open_page, screenshot):
    product = api.live_product()
    url = stack.hosts[0].url
    workpanel = open_page(url + "/workpanel", "olga")
    dispatch = open_page(url + "/dispatch", "dmitri")
    expect(option(dispatch, product["id"])).to_have_count(1)

    card(workpanel, "live", product["id"]).click()
    details = workpanel.get_by_test_id("details-panel")
    expect(details).to_contain_text(product["name"])
    expect(details.get_by_test_id("stages-table")).to_contain_text("Turning")
    screenshot(workpanel, "workpanel-details")
    form = workpanel.get_by_test_id("form-move-to-past")
    form.get_by_label("Reason").fill("finished early")
    form.get_by_role("button", name="Move to Past").click()

    expect(option(dispatch, product["id"])).to_have_count(0, timeout=2000)
    expect(details.get_by_test_id("details-state")).to_have_text("Past")
    expect(details.get_by_test_id("transitions")).to_contain_text("finished early")
    workpanel.get_by_test_id("tab-past").click()
    expect(card(workpanel, "past", product["id"])).to_be_visible()
    assert_not_reloaded(workpanel, dispatch)
    screenshot(workpanel, "workpanel-past")
    screenshot(dispatch, "dispatch")


def test_a_dispatch_reaches_the_workpanel_past_tab_and_the_dashboard_feed(
    stack, api, open_page, screenshot
):
    product = api.live_product()
    url = stack.hosts[0].url
    dispatch = open_page(url + "/dispatch", "dmitri")
    workpanel = open_page(url + "/workpanel", "olga")
    dashboard = open_page(url + "/dashboard", "mira")
    workpanel.get_by_test_id("tab-past").click()
    expect(card(workpanel, "live", product["id"])).to_have_count(1)
    expect(card(workpanel, "past", product["id"])).to_have_count(0)

    dispatch.get_by_test_id("product-select").select_option(str(product["id"]))
    dispatch.get_by_label("Quantity").fill("5")
    dispatch.get_by_label("Destination", exact=True).fill("Dock 7")
    dispatch.get_by_label("Notes (optional)").fill("Truck at 14:00")
    dispatch.get_by_test_id("dispatch-submit").click()

    expect(dispatch.get_by_test_id("notice-region")).to_contain_text(
        f"Dispatched {product['name']}"
    )
    expect(option(dispatch, product["id"])).to_have_count(0)
    expect(dispatch.get_by_test_id("recent-dispatches").locator("li").first).to_contain_text(
        product["name"]
    )
    expect(card(workpanel, "past", product["id"])).to_be_visible(timeout=2000)
    expect(card(workpanel, "live", product["id"])).to_have_count(0)
    feed = dashboard.get_by_test_id("activity-feed")
    line = re.compile(f"{re.escape(product['name'])} moved to past by dmitri — dispatched")
    expect(feed.locator("li", has_text=line)).to_have_count(1, timeout=2000)
    assert_not_reloaded(dispatch, workpanel, dashboard)
    screenshot(dispatch, "dispatch")
    screenshot(workpanel, "workpanel-past")
    screenshot(dashboard, "dashboard")


def test_a_conflict_from_the_api_is_shown_in_words(stack, api, open_page, screenshot):
    """Someone else dispatches the product first; this page never heard (its stream is cut)."""
    product = api.live_product()

    def cut_the_stream(context):
        context.route(STREAM, lambda route: route.abort())

    dispatch = open_page(
        stack.hosts[0].url + "/dispatch", "dmitri", wait_live=False, context_setup=cut_the_stream
    )
    dispatch.get_by_test_id("product-select").select_option(str(product["id"]))
    dispatch.get_by_label("Destination", exact=True).fill("Dock 1")
    api.post(
        "/api/live-products/dispatchable",
        {"productId": product["id"], "destination": "Dock 2"},
        expect=200,
    )
    sentence = api.post(
        "/api/live-products/dispatchable", {"productId": product["id"], "destination": "Dock 2"}
    ).json()["error"]

    dispatch.get_by_test_id("dispatch-submit").click()

    alert = dispatch.get_by_test_id("error-region")
    expect(alert).to_contain_text(f"Could not dispatch {product['name']}")
    expect(alert).to_contain_text(sentence)
    assert alert.get_attribute("role") == "alert"
    screenshot(dispatch, "dispatch-conflict")


def test_a_restart_reads_reconnecting_then_the_pages_catch_up(own_stack, open_page, screenshot):
    """The host the pages use goes down; a change is made on another host; the pages catch up."""
    first, other = own_stack.hosts
    api = Api(other.url, own_stack.token)
    product = api.live_product()
    users = {"dispatch": "dmitri", "workpanel": "olga", "dashboard": "mira"}
    pages = {name: open_page(f"{first.url}/{name}", user) for name, user in users.items()}
    expect(option(pages["dispatch"], product["id"])).to_have_count(1)

    first.stop()
    for page in pages.values():
        expect(page.get_by_test_id("conn-status")).to_have_attribute(
            "data-state", "reconnecting", timeout=10000
        )
        expect(page.get_by_test_id("conn-status")).to_have_text("reconnecting")
    screenshot(pages["dispatch"], "dispatch-reconnecting")
    api.post(
        "/api/live-products/dispatchable",
        {"productId": product["id"], "destination": "Dock 4"},
        expect=200,
    )
    first.start()

    for page in pages.values():
        expect(page.get_by_test_id("conn-status")).to_have_attribute(
            "data-state", "live", timeout=15000
        )
    expect(option(pages["dispatch"], product["id"])).to_have_count(0)
    expect(pages["dispatch"].get_by_test_id("recent-dispatches")).to_contain_text("Dock 4")
    pages["workpanel"].get_by_test_id("tab-past").click()
    expect(card(pages["workpanel"], "past", product["id"])).to_be_visible()
    feed_line = (
        pages["dashboard"]
        .get_by_test_id("activity-feed")
        .locator("li", has_text=f"{product['name']} moved to past")
    )
    expect(feed_line).to_have_count(1)
    expect(feed_line).to_contain_text("while offline")
    assert_not_reloaded(*pages.values())
    for name, page in pages.items():
        screenshot(page, name)


@pytest.mark.parametrize("path", ["/workpanel", "/dispatch", "/dashboard"])
def test_pages_run_under_a_strict_content_security_policy(stack, open_page, path):
    """No inline script or style anywhere: the pages work unchanged under a CSP without them."""
    url = stack.hosts[0].url + path
    page = open_page(url, "mira")

    def strict_csp(route):
        response = route.fetch()
        headers = {**response.headers, "content-security-policy": STRICT_CSP}
        route.fulfill(response=response, headers=headers)

    page.context.route(url, strict_csp)
    page.context.add_init_script(
        "window.__csp = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.reload()
    expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "live")
    expect(page.locator("main [aria-busy]")).to_have_count(0)
    assert page.evaluate("window.__csp") == []


def test_the_workpanel_works_from_the_keyboard(stack, api, open_page):
    product = api.live_product()
    page = open_page(stack.hosts[0].url + "/workpanel", "olga")
    page.get_by_test_id("tab-live").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_test_id("tab-past")).to_be_focused()
    expect(page.get_by_test_id("tab-past")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("panel-live")).to_be_hidden()
    page.keyboard.press("ArrowLeft")
    card(page, "live", product["id"]).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#details-title")).to_be_focused()
    expect(page.locator("#details-title")).to_contain_text(product["name"])
    page.get_by_test_id("details-close").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("details-panel")).to_be_hidden()
    expect(card(page, "live", product["id"])).to_be_focused()


def test_a_live_update_does_not_take_the_keyboard_focus_off_a_card(stack, api, open_page):
    product = api.live_product()
    page = open_page(stack.hosts[0].url + "/workpanel", "olga")
    card(page, "live", product["id"]).focus()
    other = api.live_product()  # the stream brings it, and the list is drawn again
    expect(card(page, "live", other["id"])).to_be_visible()
    expect(card(page, "live", product["id"])).to_be_focused()

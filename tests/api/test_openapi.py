"""/api/openapi.json lists the whole contract; /api/docs renders it from the app's own assets."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.api.conftest import ok


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request) -> str:
    """SQLite only: nothing here depends on the database behind the app."""
    return request.param


# Every path and method of ../shared/API.md ("Catalogue and shop floor" and "Lifecycle").
CONTRACT = {
    ("post", "/api/products"),
    ("get", "/api/products"),
    ("get", "/api/products/{}"),
    ("post", "/api/machines"),
    ("get", "/api/machines"),
    ("patch", "/api/machines/{}"),
    ("post", "/api/jobs"),
    ("get", "/api/jobs"),
    ("get", "/api/jobs/{}"),
    ("post", "/api/jobs/{}/updates"),
    ("get", "/api/jobs/{}/updates"),
    ("get", "/api/dispatches"),
    ("get", "/api/live-products/dispatchable"),
    ("post", "/api/live-products/dispatchable"),
    ("get", "/api/live-products/dispatchable/stream"),
    ("get", "/api/products/lifecycle"),
    ("post", "/api/products/lifecycle"),
    ("post", "/api/products/move-to-past"),
    ("get", "/api/products/move-to-past"),
    ("get", "/api/dashboard/status"),
}
METHODS = {"get", "post", "put", "patch", "delete"}


def operations(spec) -> set[tuple[str, str]]:
    return {
        (method, re.sub(r"\{[^}]+\}", "{}", path))
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }


def test_openapi_lists_every_contract_path(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "TrackOPZ"
    missing = CONTRACT - operations(spec)
    assert not missing, f"not in the OpenAPI document: {sorted(missing)}"


def test_openapi_documents_bodies_parameters_and_400_not_422(client):
    spec = ok_spec(client)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert op.get("summary"), f"{method} {path} has no summary"
            assert "422" not in op["responses"], f"{method} {path} documents a 422"
    jobs = spec["paths"]["/api/jobs"]["post"]
    assert "requestBody" in jobs and "400" in jobs["responses"]
    assert "201" in jobs["responses"]
    schema_ref = jobs["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    assert {"productId", "machineId", "stage", "operator", "quantityPlanned"} <= set(
        body["properties"]
    )
    assert set(body["required"]) == {"productId", "machineId"}
    params = {p["name"] for p in spec["paths"]["/api/jobs"]["get"]["parameters"]}
    assert {"state", "productId", "machineId", "limit", "cursor"} <= params
    (path_param,) = spec["paths"]["/api/products/{product_id}"]["parameters"]
    assert path_param["schema"]["type"] == "integer" and path_param["schema"]["minimum"] == 1


def ok_spec(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.get_json()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.spec_url = None

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)
            if name == "data-spec-url":
                self.spec_url = value


def test_docs_page_renders_from_the_apps_own_assets(client):
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    links = _Links()
    links.feed(html)
    assert links.urls, "the page loads no assets"
    for url in links.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.get_data()) > 100, url
    assert links.spec_url and client.get(links.spec_url).status_code == 200
    init = [u for u in links.urls if u.endswith("swagger-init.js")]
    assert init and "validatorUrl: null" in client.get(init[0]).get_data(as_text=True)
    ok(client.get("/api/live-products/dispatchable"))  # and the API answers beside it

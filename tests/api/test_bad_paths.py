"""Ids in paths that name no row answer 404 with the envelope, on both databases: these do
reach the database (on Postgres an id past 32 bits was an overflow in the driver: a 500)."""

from __future__ import annotations

from tests.api.conftest import assert_error

BAD_PATH_IDS = ["abc", "-1", "0", "1.5", "%20", "007", str(2**31), "9" * 30, "9" * 5000, "1e3"]
SOME_BAD_PATH_IDS = ["abc", "0", str(2**31)]


def test_bad_ids_in_paths_are_404(client, make, dump, subtests):
    make.live_product()
    rows = dump()
    for template, method, values in (
        ("/api/products/{}", "get", BAD_PATH_IDS),
        ("/api/machines/{}", "get", SOME_BAD_PATH_IDS),
        ("/api/jobs/{}", "get", SOME_BAD_PATH_IDS),
        ("/api/jobs/{}/updates", "get", BAD_PATH_IDS),
        ("/api/machines/{}", "patch", SOME_BAD_PATH_IDS),
        ("/api/jobs/{}/updates", "post", SOME_BAD_PATH_IDS),
    ):
        body = {"patch": {"name": "x"}, "post": {"operator": "a", "quantity": 1}}.get(method)
        for value in values:
            url = template.format(value)
            with subtests.test(msg=f"{method} {url:.60}"):
                assert_error(getattr(client, method)(url, json=body), 404)
    assert dump() == rows

"""Bad input is refused with the JSON envelope and changes nothing, whatever it is.

Each test sets up a small factory, then throws its list of bad requests at the API, one subtest
each: every answer must be the error envelope with the expected code, every case must leave the
database's fingerprint alone, and at the end every row must be as it was. The full list of
attacks goes at one endpoint of each kind; the others, which share its parser and schemas, get a
sample.

These run on SQLite only: everything here is refused by the parser and the schemas before the
database is asked anything, so Postgres would answer the same (a missing check shows on SQLite
too: it expects a 400 where SQLite would accept). Ids in paths, which do reach the database,
are in test_bad_paths.py, on both.
"""

from __future__ import annotations

import base64

import pytest

from tests.api.conftest import assert_error

TWO_MB = 2 * 1024 * 1024
# fmt: off
BAD_IDS = [
    True, False, 1.5, 1.0, [], [1], {}, "abc", "", " ", "-1", "1e3", "12abc", "0x1F", -1, 0, "0",
    2**31, str(2**31),  # past the database's INTEGER ids
    10**30, None,
]
SOME_BAD_IDS = [True, 1.5, [], "abc", "-1", 0, 2**31, None]
BAD_TEXT = [5, 1.5, True, [], {"a": 1}, "a\u0000b", "\ud800", "lone \udfff surrogate"]
SOME_BAD_TEXT = [5, [], "a\u0000b", "\ud800"]
BAD_LIMITS = ["0", "-1", "501", str(10**30), "abc", "1.5", "", "1e2", "%00"]
SOME_BAD_LIMITS = ["0", "501", "abc"]
# fmt: on


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


FORGED_CURSORS = [
    "abc",
    "!!!",
    "%25",
    "%00",
    cursor("id:abc"),
    cursor("id:-5"),
    cursor("id:0"),
    cursor("id:99999999999999999999"),  # an id no INTEGER column holds
    cursor("id:" + "9" * 5000),
    cursor("id:\u0663"),  # an Arabic-Indic digit: str.isdigit() says yes
    cursor("x:5"),
    cursor("id"),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
]
SOME_FORGED_CURSORS = ["!!!", cursor("id:abc"), cursor("id:99999999999999999999")]


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def world(make):
    product, machine, job = make.live_product()
    idle = make.product()
    return {"product": product, "machine": machine, "job": job, "idle": idle}


@pytest.fixture
def check(client, dump, fingerprint, subtests):
    """Run (label, request, status, field) cases; each must be refused and write nothing."""

    def run(cases):
        rows, before = dump(), fingerprint()
        for label, send, status, field in cases:
            with subtests.test(msg=label):
                assert_error(send(), status, field=field)
                assert fingerprint() == before, f"{label} changed the database"
        assert dump() == rows

    return run


def body_cases(client, url, valid, method="post", full=False):
    """Bodies no JSON write may accept: broken JSON, not an object, too big, not JSON."""
    call = getattr(client, method)

    def raw(data, content_type="application/json"):
        return lambda: call(url, data=data, content_type=content_type)

    cases = [
        (f"{url} malformed JSON", raw('{"productId": '), 400, None),
        (f"{url} an array", raw("[]"), 400, None),
        (f"{url} unknown field", lambda: call(url, json={**valid, "colour": "red"}), 400, "colour"),
        (f"{url} 2 MB of JSON", raw(b"{" + b" " * TWO_MB + b"}"), 413, None),
        (f"{url} text/plain", raw('{"productId": 1}', "text/plain"), 415, None),
    ]
    if full:
        cases += [
            (f"{url} trailing garbage", raw('{"a": 1} x'), 400, None),
            (f"{url} single quotes", raw("{'productId': 1}"), 400, None),
            (f"{url} null", raw("null"), 400, None),
            (f"{url} a string", raw('"move_to_past"'), 400, None),
            (f"{url} a number", raw("42"), 400, None),
            (f"{url} NaN", raw("NaN"), 400, None),
            (f"{url} nested 100,000 deep", raw("[" * 100_000 + "]" * 100_000), 400, None),
            (f"{url} invalid UTF-8", raw(b'{"note": "\xff\xfe"}'), 400, None),
            (f"{url} a form", lambda: call(url, data={"productId": "1"}), 415, None),
            (f"{url} 2 MB of text", raw(b"x" * TWO_MB, "text/plain"), 415, None),
            (f"{url} no content type", raw(b'{"productId": 1}', None), 415, None),
        ]
    return cases


def field_cases(client, url, valid, field, values, method="post"):
    call = getattr(client, method)
    return [
        (f"{url} {field}={v!r:.40}", lambda v=v: call(url, json={**valid, field: v}), 400, field)
        for v in values
    ]


def test_bad_bodies_on_the_catalogue(client, world, check):
    cases = []
    valid = {"name": "Shaft", "code": "NEW-1"}
    cases += body_cases(client, "/api/products", valid, full=True)
    cases += field_cases(client, "/api/products", valid, "name", BAD_TEXT + ["", " ", "x" * 201])
    cases += field_cases(client, "/api/products", valid, "code", SOME_BAD_TEXT + ["", "c" * 65])
    cases += field_cases(client, "/api/products", valid, "description", SOME_BAD_TEXT)
    cases += [
        (
            "product without name",
            lambda: client.post("/api/products", json={"code": "C"}),
            400,
            "name",
        ),
        (
            "product without code",
            lambda: client.post("/api/products", json={"name": "N"}),
            400,
            "code",
        ),
    ]
    valid = {"name": "Saw", "code": "NEW-M"}
    cases += body_cases(client, "/api/machines", valid)
    cases += field_cases(client, "/api/machines", valid, "name", SOME_BAD_TEXT + [None])
    cases += field_cases(client, "/api/machines", valid, "status", ["running", "IDLE", "", 1, []])
    patch = f"/api/machines/{world['machine']['id']}"
    cases += body_cases(client, patch, {"name": "Saw"}, method="patch")
    cases += field_cases(client, patch, {}, "status", ["broken", "", 3, None], method="patch")
    cases += field_cases(client, patch, {}, "name", ["", 5, "a\u0000", None], method="patch")
    cases += [("patch nothing", lambda: client.patch(patch, json={}), 400, None)]
    check(cases)


def test_bad_bodies_on_jobs_and_updates(client, world, check):
    valid = {"productId": world["idle"]["id"], "machineId": world["machine"]["id"], "stage": "T"}
    cases = body_cases(client, "/api/jobs", valid, full=True)
    cases += field_cases(client, "/api/jobs", valid, "productId", BAD_IDS)
    cases += field_cases(client, "/api/jobs", valid, "machineId", SOME_BAD_IDS)
    cases += field_cases(client, "/api/jobs", valid, "stage", SOME_BAD_TEXT + ["s" * 201])
    cases += field_cases(client, "/api/jobs", valid, "operator", SOME_BAD_TEXT + ["o" * 121])
    cases += field_cases(
        client, "/api/jobs", valid, "quantityPlanned", [0, -5, 1.5, "10", True, 10**10, []]
    )
    for missing in ("productId", "machineId"):
        body = {k: v for k, v in valid.items() if k != missing}
        cases += [
            (
                f"job without {missing}",
                lambda b=body: client.post("/api/jobs", json=b),
                400,
                missing,
            )
        ]
    url = f"/api/jobs/{world['job']['id']}/updates"
    valid = {"operator": "ana", "quantity": 5}
    cases += body_cases(client, url, valid)
    cases += field_cases(client, url, valid, "quantity", [0, -1, 1.5, "5", True, None, [], 10**10])
    cases += field_cases(client, url, valid, "operator", SOME_BAD_TEXT + ["", "o" * 121, None])
    cases += field_cases(client, url, valid, "scrapQuantity", [-1, 1.5, "1", True, 10**10])
    cases += field_cases(client, url, valid, "note", SOME_BAD_TEXT + ["n" * 2001])
    cases += field_cases(client, url, valid, "jobId", [world["job"]["id"]])  # it is in the path
    check(cases)


def test_bad_bodies_on_lifecycle_calls(client, world, check):
    product_id = world["product"]["id"]
    url = "/api/products/lifecycle"
    valid = {"productId": product_id, "action": "move_to_past"}

    def post(body):
        return lambda: client.post("/api/products/lifecycle", json=body)

    cases = body_cases(client, url, valid, full=True)
    cases += field_cases(client, url, valid, "productId", BAD_IDS)
    cases += field_cases(client, url, valid, "jobId", [v for v in BAD_IDS if v is not None])
    cases += field_cases(client, url, valid, "action", [5, None, True, ["move_to_past"], {}])
    cases += field_cases(client, url, valid, "reason", SOME_BAD_TEXT + ["r" * 501])
    cases += [
        (f"action={a!r}", post({**valid, "action": a}), 400, None)
        for a in ("delete", "archive", "MOVE_TO_PAST", "move_to_past ", "", "x" * 41)
    ]
    cases += [
        (f"newState={s!r}", post({**valid, "action": "update_state", "newState": s}), 400, None)
        for s in ("on", "off", "PAUSED", "", 1, True, None)
    ]
    cases += [
        ("no action", post({"productId": product_id}), 400, "action"),
        ("no productId", post({"action": "reactivate"}), 400, "productId"),
    ]
    for other in ("/api/products/move-to-past", "/api/live-products/dispatchable"):
        valid = {"productId": product_id}
        cases += body_cases(client, other, valid)
        cases += field_cases(client, other, valid, "productId", SOME_BAD_IDS)
        cases += field_cases(client, other, valid, "jobId", SOME_BAD_IDS[:-1])
        cases += [
            (f"{other} no productId", lambda u=other: client.post(u, json={}), 400, "productId")
        ]
    dispatch = "/api/live-products/dispatchable"
    cases += field_cases(client, dispatch, valid, "quantity", [0, -1, 1.5, "3", True, 10**10])
    cases += field_cases(client, dispatch, valid, "destination", SOME_BAD_TEXT + ["d" * 201])
    cases += field_cases(client, dispatch, valid, "notes", SOME_BAD_TEXT + ["n" * 2001])
    cases += field_cases(client, dispatch, valid, "action", ["move_to_past"])  # not a field here
    check(cases)


def test_bad_query_strings(client, world, check):
    def get(url, query, field):
        return (f"{url}?{query:.40}", lambda: client.get(f"{url}?{query}"), 400, field)

    cases = [get("/api/products", f"limit={v}", "limit") for v in BAD_LIMITS]
    cases += [get("/api/products", f"cursor={c}", "cursor") for c in FORGED_CURSORS]
    for url in (
        "/api/machines",
        "/api/jobs",
        "/api/dispatches",
        f"/api/jobs/{world['job']['id']}/updates",
    ):
        cases += [get(url, f"limit={v}", "limit") for v in SOME_BAD_LIMITS]
        cases += [get(url, f"cursor={c}", "cursor") for c in SOME_FORGED_CURSORS]
    query_ids = ["abc", "-1", "0", "1.5", "", "true", "null", str(2**31), "9" * 30, "%00"]
    for url, field in (
        ("/api/jobs", "productId"),
        ("/api/jobs", "machineId"),
        ("/api/dispatches", "productId"),
        ("/api/products/lifecycle", "productId"),
        ("/api/products/move-to-past", "productId"),
    ):
        cases += [get(url, f"{field}={v}", field) for v in query_ids]
    for url in ("/api/products/lifecycle", "/api/products/move-to-past"):
        cases += [(f"{url} without productId", lambda u=url: client.get(u), 400, "productId")]
    for url in ("/api/products", "/api/jobs"):
        cases += [get(url, f"state={s}", "state") for s in ("on", "live", "", "1")]
    cases += [get("/api/dashboard/daily", f"days={d}", "days") for d in ("0", "367", "x")]
    check(cases)


def test_unknown_paths_and_methods(client, world, check):
    product, job, machine = world["product"], world["job"], world["machine"]

    def case(label, send, status):
        return (label, send, status, None)

    check(
        [
            case("unknown path", lambda: client.get("/api/nothing-here"), 404),
            case("unknown post", lambda: client.post("/api/nothing-here", json={}), 404),
            case("delete product", lambda: client.delete(f"/api/products/{product['id']}"), 405),
            case("put product", lambda: client.put(f"/api/products/{product['id']}", json={}), 405),
            case("delete job", lambda: client.delete(f"/api/jobs/{job['id']}"), 405),
            case("patch job", lambda: client.patch(f"/api/jobs/{job['id']}", json={}), 405),
            case("delete machine", lambda: client.delete(f"/api/machines/{machine['id']}"), 405),
            case(
                "put dispatchable",
                lambda: client.put("/api/live-products/dispatchable", json={}),
                405,
            ),
            case("delete lifecycle", lambda: client.delete("/api/products/lifecycle"), 405),
            case(
                "patch move-to-past",
                lambda: client.patch("/api/products/move-to-past", json={}),
                405,
            ),
            case("post dashboard", lambda: client.post("/api/dashboard/status", json={}), 405),
            case("post dispatches", lambda: client.post("/api/dispatches", json={}), 405),
        ]
    )


def test_bad_idempotency_keys(client, world, check):
    url = "/api/products/lifecycle"
    body = {"productId": world["product"]["id"], "action": "move_to_past"}
    check(
        [
            (
                f"Idempotency-Key {key[:20]!r}",
                lambda k=key: client.post(url, json=body, headers={"Idempotency-Key": k}),
                400,
                None,
            )
            for key in ("", "   ", "k" * 201)
        ]
    )

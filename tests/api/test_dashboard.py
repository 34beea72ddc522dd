"""The dashboard's figures, checked against a small history built by hand on a set clock."""

from __future__ import annotations

from datetime import datetime

from tests.api.conftest import assert_error, is_iso_z, ok

DISPATCH = "/api/live-products/dispatchable"


def build_history(client, make, clock) -> dict:
    """Yesterday: P1 starts on Cutting, P2 on Turning and is dispatched. Today: P3 starts and
    is moved to past, P4 goes Turning -> Cutting and is dispatched, P5 is only catalogued."""
    clock.set(datetime(2030, 6, 14, 10, 0))
    cutting = make.machine(name="Cutting")
    turning = make.machine(name="Turning")
    grinding = make.machine(name="Grinding", status="maintenance")
    pdi = make.machine(name="PDI", status="offline")
    p1, p2 = make.product(name="P1"), make.product(name="P2")
    make.job(p1["id"], cutting["id"], stage="Cutting")
    make.job(p2["id"], turning["id"], stage="Turning")
    clock.advance(hours=2)
    ok(client.post(DISPATCH, json={"productId": p2["id"]}))

    clock.set(datetime(2030, 6, 15, 9, 0))
    p3 = make.product(name="P3")
    make.job(p3["id"], cutting["id"], stage="Cutting")
    clock.advance(minutes=30)
    ok(make.action(p3["id"], "move_to_past", reason="cancelled"))
    clock.advance(minutes=10)
    p4 = make.product(name="P4")
    make.job(p4["id"], turning["id"], stage="Turning")
    clock.advance(minutes=20)
    make.job(p4["id"], cutting["id"], stage="Cutting")
    clock.set(datetime(2030, 6, 15, 11, 0))
    ok(client.post(DISPATCH, json={"productId": p4["id"]}))
    p5 = make.product(name="P5")
    clock.set(datetime(2030, 6, 15, 12, 0))
    return {
        "products": (p1, p2, p3, p4, p5),
        "machines": (cutting, turning, grinding, pdi),
    }


def test_dashboard_status_for_a_hand_built_history(client, make, clock, sql):
    world = build_history(client, make, clock)
    p1, p2, p3, p4, _ = world["products"]
    cutting, turning, grinding, pdi = world["machines"]

    dashboard = ok(client.get("/api/dashboard/status"))["dashboard"]
    assert set(dashboard) >= {
        "stats",
        "liveProducts",
        "pastProducts",
        "machineStatus",
        "recentActivity",
        "realtime",
        "lastUpdated",
    }
    assert dashboard["stats"] == {
        "totalProducts": 5,
        "liveProducts": 1,
        "pastProducts": 3,
        "dispatchableProducts": 1,
        "totalMachines": 4,
        "activeMachines": 1,
        "inactiveMachines": 3,
        # today: P3 start + move; P4 start, stage done, start, dispatch
        "transitionsToday": 6,
        "dispatchedToday": 1,
    }
    assert [p["id"] for p in dashboard["liveProducts"]] == [p1["id"]]
    assert dashboard["liveProducts"][0]["process"] == "Cutting"
    past = dashboard["pastProducts"]
    assert [p["id"] for p in past] == [p4["id"], p3["id"], p2["id"]]  # most recent first
    assert past[0]["endedAt"] == "2030-06-15T11:00:00.000Z"

    board = {m["id"]: m for m in dashboard["machineStatus"]}
    assert set(board) == {cutting["id"], turning["id"], grinding["id"], pdi["id"]}
    for entry in board.values():
        assert {"id", "name", "status", "currentProduct", "lastActivity"} <= set(entry)
        assert is_iso_z(entry["lastActivity"])
    assert board[cutting["id"]]["status"] == "running"
    assert board[cutting["id"]]["currentProduct"] == {"id": p1["id"], "name": "P1"}
    assert (board[turning["id"]]["status"], board[turning["id"]]["currentProduct"]) == (
        "idle",
        None,
    )
    assert board[grinding["id"]]["status"] == "maintenance"
    assert board[pdi["id"]]["status"] == "offline"

    activity = dashboard["recentActivity"]
    assert len(activity) == 9
    ids = [a["id"] for a in activity]
    assert ids == sorted(ids, reverse=True)
    assert (activity[0]["productId"], activity[0]["productName"]) == (p4["id"], "P4")
    assert (activity[0]["action"], activity[0]["reason"]) == ("move_to_past", "dispatched")

    ((last_event,),) = sql("SELECT max(id) FROM events")
    assert dashboard["realtime"] == {"connectedClients": 0, "lastEventId": last_event}
    assert dashboard["lastUpdated"] == "2030-06-15T12:00:00.000Z"


def test_dashboard_lists_are_capped_but_the_counts_are_not(client, make, monkeypatch):
    from app.dashboard import service

    monkeypatch.setattr(service, "LIST_CAP", 2)
    for _ in range(3):
        make.live_product()
    for _ in range(3):
        product, _, _ = make.live_product()
        ok(make.action(product["id"], "move_to_past"))
    dashboard = ok(client.get("/api/dashboard/status"))["dashboard"]
    assert (dashboard["stats"]["liveProducts"], dashboard["stats"]["pastProducts"]) == (3, 3)
    assert len(dashboard["liveProducts"]) == 2 and len(dashboard["pastProducts"]) == 2


def test_dashboard_counts_follow_products_between_live_and_past(client, make, clock):
    """Counts and lists as products go live, go past, come back; one is only catalogued."""
    clock.set(datetime(2030, 6, 15, 9, 0))
    # Names sort against creation order: the live list is in name order, not id order.
    zeta, _, _ = make.live_product(name="Zeta")
    mu, _, _ = make.live_product(name="Mu")
    alpha, _, _ = make.live_product(name="Alpha")
    beta = make.product(name="Beta")  # no job yet: counted in the total, neither live nor past
    assert zeta["id"] < mu["id"] < alpha["id"] < beta["id"]

    def seen():
        dashboard = ok(client.get("/api/dashboard/status"))["dashboard"]
        stats = dashboard["stats"]
        counts = tuple(
            stats[k]
            for k in ("totalProducts", "liveProducts", "pastProducts", "dispatchableProducts")
        )
        names = [[p["name"] for p in dashboard[k]] for k in ("liveProducts", "pastProducts")]
        return counts, *names

    assert seen() == ((4, 3, 0, 3), ["Alpha", "Mu", "Zeta"], [])

    clock.advance(minutes=5)
    ok(make.action(alpha["id"], "move_to_past"))
    clock.advance(minutes=5)
    ok(client.post(DISPATCH, json={"productId": zeta["id"]}))
    assert seen() == ((4, 1, 2, 1), ["Mu"], ["Zeta", "Alpha"])

    clock.advance(minutes=5)
    ok(make.action(alpha["id"], "reactivate"))
    make.job(beta["id"], make.machine()["id"])
    assert seen() == ((4, 3, 1, 3), ["Alpha", "Beta", "Mu"], ["Zeta"])


def test_dashboard_of_an_empty_factory(client):
    dashboard = ok(client.get("/api/dashboard/status"))["dashboard"]
    assert set(dashboard["stats"].values()) == {0}
    assert dashboard["liveProducts"] == dashboard["pastProducts"] == []
    assert dashboard["machineStatus"] == dashboard["recentActivity"] == []
    assert dashboard["realtime"]["lastEventId"] == 0


def test_daily_counts_per_utc_day_oldest_first(client, make, clock):
    build_history(client, make, clock)
    days = ok(client.get("/api/dashboard/daily?days=3"))["days"]
    assert days == [
        {"date": "2030-06-13", "dispatches": 0, "transitions": 0},
        {"date": "2030-06-14", "dispatches": 1, "transitions": 3},
        {"date": "2030-06-15", "dispatches": 1, "transitions": 6},
    ]
    default = ok(client.get("/api/dashboard/daily"))["days"]
    assert len(default) == 30 and default[-1]["date"] == "2030-06-15"
    assert default[-3:] == days
    assert len(ok(client.get("/api/dashboard/daily?days=366"))["days"]) == 366


def test_daily_refuses_bad_day_counts(client):
    for bad in ("0", "-1", "367", "abc", "1.5", "99999999999999999999"):
        assert_error(client.get(f"/api/dashboard/daily?days={bad}"), 400, field="days")

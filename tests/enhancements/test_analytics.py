"""Analytics against a small history built at known times (clock_override, as the demo does)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from app.lifecycle import service
from app.models import clock_override

T0 = datetime(2026, 3, 1, 23, 0, 0)


def at(seconds: float) -> None:
    clock_override.set(T0 + timedelta(seconds=seconds))


@pytest.fixture
def history(app):
    """Two machines, four products, stages ending on 1 and 2 March (UTC).

    turning (Lathe): 600 s, 300 s, 7200 s     milling (Mill): 1200 s, 900 s, 2700 s
    lead times (first job to dispatch): 1800 s, 1200 s, 2700 s
    """
    with app.app_context():
        try:
            lathe = service.create_machine(name="Lathe", code="M-L").id
            mill = service.create_machine(name="Mill", code="M-M").id
            p1, p2, p3, p4 = (
                service.create_product(name=f"Part {i}", code=f"P-{i}").id for i in range(1, 5)
            )
            at(0)
            service.start_job(product_id=p1, machine_id=lathe, stage="turning")
            at(60)
            j1 = service.start_job(product_id=p2, machine_id=lathe, stage="turning").id
            at(61)
            service.log_update(job_id=j1, operator="ben", quantity=5)
            at(200)
            j3 = service.start_job(product_id=p3, machine_id=lathe, stage="turning").id
            at(360)  # p2 turning: 60 -> 360
            j2m = service.start_job(product_id=p2, machine_id=mill, stage="milling").id
            at(500)
            service.log_update(job_id=j2m, operator="ana", quantity=1, scrap_quantity=2)
            at(600)
            j1m = service.start_job(product_id=p1, machine_id=mill, stage="milling").id
            at(900)
            service.log_update(job_id=j1m, operator="ana", quantity=7, scrap_quantity=1)
            at(1260)  # p2 milling: 360 + 900; lead 1260 - 60 = 1200
            service.dispatch(product_id=p2, quantity=3, destination="Dock 1")
            at(1800)  # p1 milling: 600 + 1200; lead 1800
            service.dispatch(product_id=p1, quantity=7, destination="Dock 1")
            at(3600 + 1800)  # 2 March 00:30
            service.log_update(job_id=j3, operator="ana", quantity=4)
            at(3600)  # 2 March 00:00
            service.start_job(product_id=p4, machine_id=mill, stage="milling")
            at(200 + 7200)  # p3 turning ends 01:03:20 on 2 March
            service.change_state(product_id=p3, action="move_to_past")
            at(3600 + 2700)  # p4: lead 2700, milling 2700
            service.dispatch(product_id=p4, quantity=9, destination="Dock 2")
        finally:
            clock_override.set(None)
    return {"lathe": lathe, "mill": mill}


def test_stage_and_machine_times(client, history):
    body = client.get("/api/analytics/stages?from=2026-03-01&to=2026-03-02").get_json()
    assert body["success"] is True and (body["from"], body["to"]) == ("2026-03-01", "2026-03-02")
    # turning: 300, 600, 7200 -> median 600, p90 at 1.8: 600 + 0.8 * 6600
    # milling: 900, 1200, 2700 -> median 1200, p90 at 1.8: 1200 + 0.8 * 1500
    assert body["stages"] == [
        {"stage": "milling", "count": 3, "medianSeconds": 1200.0, "p90Seconds": 2400.0},
        {"stage": "turning", "count": 3, "medianSeconds": 600.0, "p90Seconds": 5880.0},
    ]
    assert body["machines"] == [
        {
            "machineId": history["lathe"],
            "machineName": "Lathe",
            "count": 3,
            "medianSeconds": 600.0,
            "p90Seconds": 5880.0,
        },
        {
            "machineId": history["mill"],
            "machineName": "Mill",
            "count": 3,
            "medianSeconds": 1200.0,
            "p90Seconds": 2400.0,
        },
    ]
    # 1 March only: the jobs that ended that day; two values interpolate halfway
    day1 = client.get("/api/analytics/stages?from=2026-03-01&to=2026-03-01").get_json()
    assert day1["stages"] == [
        {"stage": "milling", "count": 2, "medianSeconds": 1050.0, "p90Seconds": 1170.0},
        {"stage": "turning", "count": 2, "medianSeconds": 450.0, "p90Seconds": 570.0},
    ]
    empty = client.get("/api/analytics/stages?from=2026-02-01&to=2026-02-02").get_json()
    assert empty["stages"] == [] and empty["machines"] == []


def test_lead_times(client, history):
    body = client.get("/api/analytics/lead-times?from=2026-03-01&to=2026-03-02").get_json()
    # 1200, 1800, 2700 -> median 1800, p90 1800 + 0.8 * 900
    assert body["leadTime"] == {"count": 3, "medianSeconds": 1800.0, "p90Seconds": 2520.0}
    one = client.get("/api/analytics/lead-times?from=2026-03-02&to=2026-03-02").get_json()
    assert one["leadTime"] == {"count": 1, "medianSeconds": 2700.0, "p90Seconds": 2700.0}
    none = client.get("/api/analytics/lead-times?from=2026-04-01&to=2026-04-01").get_json()
    assert none["leadTime"] == {"count": 0, "medianSeconds": None, "p90Seconds": None}


def test_output_per_day_machine_and_operator(client, history):
    body = client.get("/api/analytics/output?from=2026-03-01&to=2026-03-02").get_json()
    lathe, mill = history["lathe"], history["mill"]
    assert body["output"] == [
        {"date": "2026-03-01", "machineId": lathe, "machineName": "Lathe", "operator": "ben",
         "quantity": 5, "scrap": 0, "updates": 1},
        {"date": "2026-03-01", "machineId": mill, "machineName": "Mill", "operator": "ana",
         "quantity": 8, "scrap": 3, "updates": 2},
        {"date": "2026-03-02", "machineId": lathe, "machineName": "Lathe", "operator": "ana",
         "quantity": 4, "scrap": 0, "updates": 1},
    ]  # fmt: skip
    assert body["totals"] == {"quantity": 17, "scrap": 3, "updates": 4}


def test_dispatches_per_day_and_destination(client, history):
    body = client.get("/api/analytics/dispatches?from=2026-03-01&to=2026-03-02").get_json()
    assert body["dispatches"] == [
        {"date": "2026-03-01", "destination": "Dock 1", "count": 2, "quantity": 10},
        {"date": "2026-03-02", "destination": "Dock 2", "count": 1, "quantity": 9},
    ]
    assert body["totals"] == {"count": 3, "quantity": 19}


def test_the_range_is_checked(client, anon_client):
    assert client.get("/api/analytics/stages?from=2026-03-05&to=2026-03-01").status_code == 400
    assert client.get("/api/analytics/output?from=yesterday").status_code == 400
    assert client.get("/api/analytics/dispatches?from=2000-01-01&to=2026-01-01").status_code == 400
    default = client.get("/api/analytics/dispatches").get_json()
    assert default["success"] is True and default["from"] < default["to"]
    assert anon_client.get("/api/analytics/stages").status_code == 401

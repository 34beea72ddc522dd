"""A believable factory for `flask seed-demo` and `make run`: a line of machines, products
moving through their routes over the last two weeks, operator output, some dispatched."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import func, select

from app.extensions import db
from app.lifecycle import service
from app.models import Product, clock_override, utcnow

MACHINES = [
    ("Cutting", "CUT-01"),
    ("CNC Turning Soft-1", "CNC-S1"),
    ("CNC Turning Soft-2", "CNC-S2"),
    ("Gun Drilling", "GDR-01"),
    ("Heat Treatment", "HT-01"),
    ("CNC Turning Hard-1", "CNC-H1"),
    ("CNC Turning Hard-2", "CNC-H2"),
    ("Grinding", "GRD-01"),
    ("Flat Milling VMC", "VMC-01"),
    ("Profile CNC", "PCNC-01"),
    ("PDI", "PDI-01"),
    ("RFD", "RFD-01"),
]
# (stage, machine code or a choice of parallel machines)
ROUTE = [
    ("Cutting", ["CUT-01"]),
    ("Soft turning", ["CNC-S1", "CNC-S2"]),
    ("Gun drilling", ["GDR-01"]),
    ("Heat treatment", ["HT-01"]),
    ("Hard turning", ["CNC-H1", "CNC-H2"]),
    ("Grinding", ["GRD-01"]),
    ("Flat milling", ["VMC-01"]),
    ("Profile machining", ["PCNC-01"]),
    ("Pre-dispatch inspection", ["PDI-01"]),
    ("Ready for dispatch", ["RFD-01"]),
]
PRODUCTS = [
    ("Input Shaft A", "Gearbox input shaft, 42CrMo4"),
    ("Output Shaft B", "Gearbox output shaft"),
    ("Pinion 18T", "Helical pinion, 18 teeth"),
    ("Axle Spindle", "Front axle spindle"),
    ("Drive Flange", "Flange for propeller shaft"),
    ("Crank Pin", "Forged crank pin"),
    ("Rocker Shaft", "Valve train rocker shaft"),
    ("Hub Sleeve", "Wheel hub sleeve"),
    ("Cam Follower", "Roller cam follower"),
    ("Idler Gear 32T", "Timing idler gear"),
    ("Steering Rack", "Rack bar, induction hardened"),
    ("Pump Shaft", "Hydraulic pump shaft"),
    ("Transfer Gear", "Transfer case gear"),
    ("King Pin", "Steering king pin"),
    ("Torsion Bar", "Suspension torsion bar"),
    ("Spline Coupling", "Splined coupling sleeve"),
    ("Piston Pin", "Piston gudgeon pin"),
    ("Counter Shaft", "Gearbox counter shaft"),
    ("Brake Cam", "S-cam brake shaft"),
    ("Gear Blank 40T", "Gear blank, normalised"),
    ("Yoke Shaft", "Universal joint yoke shaft"),
    ("Bevel Pinion", "Differential bevel pinion"),
    ("Clutch Shaft", "Clutch release shaft"),
    ("Tie Rod End", "Tie rod end stud"),
]
OPERATORS = ["ana", "ravi", "meera", "john", "li", "fatima", "karthik"]
DESTINATIONS = ["Pune Assembly Plant", "Chennai OEM Warehouse", "Export Bay 3", "Nashik Line 2"]


USERS = [("ana", "operator"), ("ravi", "dispatcher"), ("meera", "manager")]
DEMO_PASSWORD = "trackopz-demo"


def has_no_users() -> bool:
    from app.models import User

    return not db.session.scalar(select(func.count()).select_from(User))


def has_demo_users() -> bool:
    """The demo users still have the demo password (nobody changed it)."""
    from app.auth.service import authenticate

    return authenticate(USERS[0][0], DEMO_PASSWORD) is not None


def load_users() -> None:
    from app.auth.service import create_user

    for name, role in USERS:
        create_user(name=name, role=role, password=DEMO_PASSWORD)


def is_empty() -> bool:
    return not db.session.scalar(select(func.count()).select_from(Product))


def _plan(products: int) -> list[str]:
    """What becomes of each product, oldest first: the older half goes the whole route (most of
    them dispatched, one still at the end of the line, a few cancelled), the newer half is live
    somewhere along it. 24 products: 9 dispatched, 1 live at RFD, 2 cancelled, 12 on the way."""
    full = max(2, products // 2)
    past = max(1, products // 12)
    dispatched = max(1, full - past - 1)
    waiting = full - dispatched - past
    return (
        ["dispatch"] * dispatched
        + ["live"] * waiting
        + ["past"] * past
        + ["partial"] * (products - full)
    )


def load(seed: int = 7, products: int = len(PRODUCTS)) -> dict:
    """Write the demo factory through the lifecycle service, on a clock set in the past."""
    rng = random.Random(seed)
    start = utcnow() - timedelta(days=14)
    # Products arrive over ten days, so the newest have time to move before now.
    spacing = timedelta(days=10) / products
    clock = [start]

    def tick(minutes: float) -> None:
        clock[0] += timedelta(minutes=minutes)
        clock_override.set(clock[0])

    tick(0)
    try:
        machines = {code: service.create_machine(name=name, code=code) for name, code in MACHINES}
        counts = {"products": 0, "dispatched": 0, "past": 0, "live": 0}
        for index, fate in enumerate(_plan(products)):
            name, description = PRODUCTS[index % len(PRODUCTS)]
            if index >= len(PRODUCTS):
                name = f"{name} {index // len(PRODUCTS) + 1}"
            clock[0] = start + spacing * index + timedelta(hours=rng.randint(0, 6))
            tick(0)
            code = f"TRK-{1001 + index}"
            product = service.create_product(name=name, code=code, description=description)
            counts["products"] += 1
            # Older products got further along; the newest are still early in their route.
            depth = rng.randint(1, len(ROUTE) - 1) if fate == "partial" else len(ROUTE)
            planned = rng.choice([50, 80, 100, 120, 200])
            for stage, codes in ROUTE[:depth]:
                operator = rng.choice(OPERATORS)
                job = service.start_job(
                    product_id=product.id,
                    machine_id=machines[rng.choice(codes)].id,
                    stage=stage,
                    operator=operator,
                    quantity_planned=planned,
                    actor=operator,
                )
                for _ in range(rng.randint(1, 3)):
                    tick(rng.randint(20, 90))
                    service.log_update(
                        job_id=job.id,
                        operator=operator,
                        quantity=max(1, planned // rng.randint(2, 4)),
                        scrap_quantity=rng.choice([0, 0, 0, 1, 2]),
                        note=rng.choice([None, None, "first-off approved", "tool changed"]),
                    )
                tick(rng.randint(30, 240))
            if fate == "dispatch":
                service.dispatch(
                    product_id=product.id,
                    destination=rng.choice(DESTINATIONS),
                    notes="Demo dispatch",
                    actor="dispatch-desk",
                )
                counts["dispatched"] += 1
            elif fate == "past":
                service.change_state(
                    product_id=product.id,
                    action="move_to_past",
                    reason="customer order cancelled",
                    actor="meera",
                )
                counts["past"] += 1
            else:
                counts["live"] += 1
        service.update_machine(machine_id=machines["VMC-01"].id, status="maintenance")
        return counts
    finally:
        clock_override.set(None)

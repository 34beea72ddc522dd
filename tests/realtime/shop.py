"""Driving a running TrackOPZ over HTTP, and reading its events table, for the slow tests."""

from __future__ import annotations

import itertools
import threading

import psycopg
import requests

_codes = itertools.count(1)
_codes_lock = threading.Lock()


def _code(prefix: str) -> str:
    with _codes_lock:
        return f"{prefix}-{next(_codes):05d}"


class Shop:
    """Products with a job each, toggled live/past; every call through one signed-in session."""

    def __init__(self, base_url: str, session: requests.Session):
        self.base_url = base_url
        self.session = session
        self.live: dict[int, bool] = {}

    def _ok(self, response: requests.Response, *codes: int) -> dict:
        assert response.status_code in codes, (response.status_code, response.text[:300])
        return response.json()

    def machine(self) -> int:
        code = _code("RM")
        body = {"name": f"Rig {code}", "code": code}
        r = self.session.post(self.base_url + "/api/machines", json=body, timeout=10)
        return self._ok(r, 201)["machine"]["id"]

    def live_products(self, n: int, machines: list[int]) -> list[int]:
        ids = []
        for i in range(n):
            code = _code("RP")
            r = self.session.post(
                self.base_url + "/api/products", json={"name": f"Part {code}", "code": code}
            )
            pid = self._ok(r, 201)["product"]["id"]
            job = {"productId": pid, "machineId": machines[i % len(machines)], "stage": "turn"}
            self._ok(self.session.post(self.base_url + "/api/jobs", json=job, timeout=10), 201)
            self.live[pid] = True
            ids.append(pid)
        return ids

    def toggle(self, product_id: int, base_url: str | None = None) -> requests.Response:
        """move_to_past a live product, reactivate a past one."""
        action = "move_to_past" if self.live[product_id] else "reactivate"
        r = self.session.post(
            (base_url or self.base_url) + "/api/products/lifecycle",
            json={"productId": product_id, "action": action},
            timeout=15,
        )
        if r.status_code == 200:
            self.live[product_id] = not self.live[product_id]
        return r


def events_after(database_url: str, after: int) -> list[tuple[int, str]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, type FROM events WHERE id > %s ORDER BY id", (after,)
        ).fetchall()


def newest_event(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

"""Shared pieces: the HTTP session, what a POST fires, delivery accounting, percentiles."""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from urllib.parse import urlsplit

import aiohttp
import redis

from bench import dataset, env

# --- the one place HTTP sessions are made ---------------------------------------------------


def run_fast(coro):
    """asyncio.run on uvloop when it is installed: where the generator's own CPU competes with
    the server's for the same cores (the closed-loop writers), every bit it saves is the
    server's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def session(http: env.Http, limit: int = 100) -> aiohttp.ClientSession:
    """Every request of the bench goes through a session from here (auth headers included)."""
    return aiohttp.ClientSession(
        base_url=http.base,
        headers=http.headers,
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=60),
    )


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class Keepalive(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection POSTing JSON, one request at a time: for the
    closed-loop writers, where the generator shares the two cores with what it measures.

    aiohttp cost ~0.9 ms of the generator's CPU per POST on a 2026-12-07 VM, a tenth of the whole
    machine's cost of a transition; this costs a fraction of that. It reads only what the bench
    needs of an answer: the status and a Content-Length body (what gunicorn sends for JSON).
    """

    def __init__(self, http: env.Http):
        parts = urlsplit(http.base)
        self.host, self.port = parts.hostname, parts.port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in http.headers.items()).encode()
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None

    async def __aenter__(self) -> Keepalive:
        await asyncio.get_running_loop().create_connection(lambda: self, self.host, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.transport is not None:
            self.transport.close()

    async def post_json(self, path: str, obj) -> tuple[int, bytes]:
        if self.transport is None or self.transport.is_closing():
            await self.__aenter__()
        body = json.dumps(obj).encode()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s"
            % (path.encode(), self.host.encode(), self.port, len(body), self.head, body)
        )
        return await self.waiter

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buf[:end])
        length = _CONTENT_LENGTH.search(head)
        if length is None:
            self.waiter.set_exception(RuntimeError("an answer without Content-Length"))
            return
        size = end + 4 + int(length[1])
        if len(self.buf) < size:
            return
        status, body = int(head[9:12]), bytes(self.buf[end + 4 : size])
        del self.buf[:size]
        self.waiter.set_result((status, body))

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.buf.clear()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))


async def post_json(s, path: str, obj) -> tuple[int, bytes]:
    """POST `obj` as JSON through an aiohttp session or a Keepalive: (status, body)."""
    if isinstance(s, Keepalive):
        return await s.post_json(path, obj)
    async with s.post(path, json=obj) as r:
        return r.status, await r.read()


# --- numbers ------------------------------------------------------------------------------------


def pct(sorted_values, p: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def summary_ms(values) -> dict:
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(pct(v, 50) * 1000, 2),
        "p95": round(pct(v, 95) * 1000, 2),
        "p99": round(pct(v, 99) * 1000, 2),
        "max": round(v[-1] * 1000, 2) if v else float("nan"),
    }


def median(values):
    v = sorted(values)
    if not v:
        return float("nan")
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


# --- Redis --------------------------------------------------------------------------------------


def redis_counts(channel: str) -> dict:
    r = redis.Redis(host=env.REDIS_HOST, port=env.REDIS_PORT)
    clients = r.client_list()
    return {
        "connectedClients": r.info("clients")["connected_clients"],
        "benchDbClients": sum(1 for c in clients if c.get("db") == str(env.REDIS_DB)),
        "subscribers": r.pubsub_numsub(channel)[0][1],
    }


def wait_subscribers(channel: str, want: int, timeout: float) -> bool:
    r = redis.Redis(host=env.REDIS_HOST, port=env.REDIS_PORT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.pubsub_numsub(channel)[0][1] >= want:
            return True
        time.sleep(0.1)
    return False


# --- what a POST fires -------------------------------------------------------------------------


class TrackopzFirer:
    """Transitions through the API; each POST commits a block of consecutive event ids."""

    def __init__(self, products: list[int] | None = None, *, pool: int = 400):
        with dataset.connect() as conn:
            if products is None:
                rows = conn.execute(
                    "SELECT id, state FROM products WHERE state IS NOT NULL "
                    "ORDER BY id DESC LIMIT %s",
                    (pool,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, state FROM products WHERE id = ANY(%s)", (products,)
                ).fetchall()
        self.state = dict(rows)
        self.on = [p for p, s in rows if s == "ON"]
        self.off = [p for p, s in rows if s == "OFF"]
        self.order = list(self.state)
        self.t0_by_transition: dict[int, float] = {}
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}
        self.start_id = self.max_id()
        self._i = 0

    @staticmethod
    def max_id() -> int:
        with dataset.connect() as conn:
            return dataset.max_event_id(conn)

    def _next_product(self) -> int:
        """Alternate live and past products so the dispatchable list keeps its size."""
        self._i += 1
        want = "ON" if self._i % 2 else "OFF"
        for _ in range(len(self.order)):
            p = self.order[(self._i * 7919) % len(self.order)]
            self._i += 1
            if self.state.get(p) == want:
                return p
        return self.order[self._i % len(self.order)]

    async def fire(self, s: aiohttp.ClientSession | Keepalive, product: int | None = None) -> None:
        p = product if product is not None else self._next_product()
        action = "move_to_past" if self.state.get(p) == "ON" else "reactivate"
        t0 = time.monotonic()
        status, body = await post_json(
            s, "/api/products/lifecycle", {"productId": p, "action": action}
        )
        t1 = time.monotonic()
        if status == 200:
            data = json.loads(body)
            self.state[p] = data["newState"]
            self.t0_by_transition[data["transition"]["id"]] = t0
            self.latencies.append(t1 - t0)
        else:
            self.errors[status] = self.errors.get(status, 0) + 1
            if status == 409:
                self.state[p] = "OFF" if action == "reactivate" else "ON"

    def event_times(self) -> dict[int, float]:
        """Event id -> the start time of the POST whose transaction committed it."""
        with dataset.connect() as conn:
            rows = conn.execute(
                "SELECT id, payload->>'transitionId' FROM events WHERE id > %s ORDER BY id",
                (self.start_id,),
            ).fetchall()
        out: dict[int, float] = {}
        current = None
        for event_id, tid in rows:
            if tid is not None and int(tid) in self.t0_by_transition:
                current = self.t0_by_transition[int(tid)]
            elif tid is not None:
                current = None  # someone else's transition
            if current is not None:
                out[event_id] = current
        return out


class FlaskSseFirer:
    """POSTs to the baseline's /publish: the same event bodies, 2-3 per group, ids from 1."""

    def __init__(self):
        self.groups = sample_groups()
        self.next_id = 1
        self.t0: dict[int, float] = {}
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}
        self.start_id = 0
        self._i = 0

    async def fire(self, s: aiohttp.ClientSession, product=None) -> None:
        group = self.groups[self._i % len(self.groups)]
        self._i += 1
        events = []
        for body in group:
            events.append({"id": self.next_id, "data": body})
            self.next_id += 1
        t0 = time.monotonic()
        async with s.post("/publish", json={"events": events}) as r:
            await r.read()
        if r.status == 200:
            for e in events:
                self.t0[e["id"]] = t0
            self.latencies.append(time.monotonic() - t0)
        else:
            self.errors[r.status] = self.errors.get(r.status, 0) + 1

    def event_times(self) -> dict[int, float]:
        return dict(self.t0)


def sample_groups(limit: int = 400) -> list[list[dict]]:
    """Recent TrackOPZ events, grouped by transaction, as the JSON bodies the stream sends."""
    with dataset.connect() as conn:
        rows = conn.execute(
            "SELECT id, type, payload, created_at FROM events ORDER BY id DESC LIMIT %s",
            (limit,),
        ).fetchall()
    rows.reverse()
    groups: list[list[dict]] = []
    for _id, type_, payload, created in rows:
        body = {
            "type": type_,
            "data": payload,
            "timestamp": created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        }
        if "transitionId" in payload or not groups:
            groups.append([body])
        else:
            groups[-1].append(body)
    # the newest transactions first: the oldest rows of the tail may be loaded single events
    return [g for g in reversed(groups) if g] or [[{"type": "ping", "data": {}, "timestamp": ""}]]


async def fire_paced(firer, http: env.Http, count: int, rate: float, *, concurrency: int = 1):
    """`count` POSTs at `rate` per second, open loop; returns the seconds it took."""
    async with session(http, limit=max(4, concurrency)) as s:
        t_start = time.monotonic()
        pending = set()
        for i in range(count):
            delay = t_start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if concurrency == 1:
                await firer.fire(s)
            else:
                pending.add(asyncio.ensure_future(firer.fire(s)))
                pending = {t for t in pending if not t.done()}
        if pending:
            await asyncio.gather(*pending)
        return time.monotonic() - t_start


# --- deliveries --------------------------------------------------------------------------------


def deliveries(streams: list[tuple[array, array]], t0_of: dict[int, float]) -> dict:
    """Per (client, event) latency, and events lost, repeated or out of order, per client."""
    expected = set(t0_of)
    lats: list[float] = []
    lost = dup = disorder = clients_short = 0
    for ids, times in streams:
        seen = set()
        last = -1
        for eid, t in zip(ids, times, strict=True):
            if eid not in expected:
                continue
            if eid in seen:
                dup += 1
                continue
            if eid < last:
                disorder += 1
            last = eid
            seen.add(eid)
            lats.append(t - t0_of[eid])
        missing = len(expected) - len(seen)
        if missing:
            lost += missing
            clients_short += 1
    out = summary_ms(lats)
    out.update(
        delivered=len(lats),
        expected=len(expected) * len(streams),
        lost=lost,
        duplicated=dup,
        outOfOrder=disorder,
        clientsMissingEvents=clients_short,
    )
    return out

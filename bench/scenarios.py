"""The measurements of issue 7: fan-out, write path, reads, reconnect storm, side by side."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from bench import common, dataset, env, procs
from bench.sse import Clients

HOST = "127.0.0.1"
CONNECT_RATE = 100  # TrackOPZ stream connects per second when building up N clients


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Ctx:
    """What every scenario shares: the source tree, the dataset loaded, the bench's token."""

    def __init__(self, source: env.Source, *, procs_for=None, profile: bool = False):
        self.source = source
        self.dataset: dict | None = None
        self.headers: dict = {}
        self.profile = profile
        self.profiles: list[dict] = []

    def ensure_dataset(self, products: int) -> dict:
        if self.dataset and self.dataset["products"] == products:
            return self.dataset
        log(f"dataset: {products:,} products x 10 jobs")
        self.dataset = dataset.prepare(self.source, products)
        self.headers = {}
        return self.dataset

    def http(self, server: procs.Server) -> env.Http:
        http = env.Http(server.url, dict(self.headers))
        if isinstance(server, procs.TrackOPZ) and not self.headers:
            http.auth(self.source, server.env)
            self.headers = dict(http.headers)
        return http


def gen_procs(n: int) -> int:
    """Generator processes: one up to 1,000 clients, two above (BENCH_GEN_PROCS overrides)."""
    import os

    return int(os.environ.get("BENCH_GEN_PROCS") or 0) or (1 if n <= 1000 else 2)


# --- profiling ---------------------------------------------------------------------------------


@contextmanager
def profiled(ctx: Ctx, server: procs.Server, label: str, seconds: float):
    """py-spy on every worker during the block; one top-functions summary of all of them."""
    if not ctx.profile:
        yield
        return
    outs, spies = [], []
    for pid in server.worker_pids():
        out = env.RESULTS_DIR / f"pyspy-{label}-{pid}.txt"
        outs.append(out)
        spies.append(
            subprocess.Popen(
                [
                    str(env.VENV_BIN / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, int(seconds + 0.999))),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        yield
    finally:
        for p in spies:
            try:
                p.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                p.kill()
        found = [o for o in outs if o.exists()]
        if found:
            summary = summarize_profile(found)
            ctx.profiles.append({"label": label, "files": [str(o) for o in found], **summary})
            log(f"profile {label}: {summary['samples']} samples; self: {summary['self'][:6]}")


def _frame(f: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)'."""
    name, _, where = f.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def summarize_profile(paths: list[Path], top: int = 12) -> dict:
    self_c: Counter = Counter()
    incl_c: Counter = Counter()
    total = 0
    lines = [ln for p in paths for ln in p.read_text(errors="replace").splitlines()]
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        if frames:
            self_c[frames[-1]] += n
        for f in set(frames):
            incl_c[f] += n
    return {
        "samples": total,
        "self": [(f, round(100 * n / total, 1)) for f, n in self_c.most_common(top)]
        if total
        else [],
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in incl_c.most_common(top * 2)]
        if total
        else [],
    }


# --- fan-out -----------------------------------------------------------------------------------


def fanout_run(
    ctx: Ctx,
    system: str,
    n: int,
    *,
    transitions: int = 10,
    rate: float = 1.0,
    connect_rate: float | None = None,
    baseline_cpu: float | None = None,
) -> dict:
    """N clients on one host (2 workers), `transitions` POSTs at `rate`/s; every number of item 1."""
    server = procs.TrackOPZ(ctx.source) if system == "trackopz" else procs.FlaskSSE()
    channel = env.REDIS_CHANNEL if system == "trackopz" else env.FLASK_SSE_CHANNEL
    ready = "hello" if system == "trackopz" else "made"
    server.start()
    try:
        http = ctx.http(server)
        headers = http.headers if system == "trackopz" else {}
        with Clients(HOST, server.port, gen_procs(n)) as cl:
            # warm both workers (imports, hub, pools), then take the idle baseline
            # (flask-sse keeps a closed stream's subscription until its next write fails: it is
            # warmed by publishes only, so no stale subscriptions count in its figures)
            warm = _firer(system)
            if system == "trackopz":
                cl.connect(40, server.stream_path, headers, per_second=40, ready=ready, timeout=30)
            asyncio.run(common.fire_paced(warm, http, 2, 10))
            if system == "trackopz":
                cl.reach(max(warm.event_times() or {0: 0}), timeout=20)
                cl.close_streams()
            time.sleep(1.5)
            rss0 = server.rss_kib()
            subs0 = common.redis_counts(channel)["subscribers"]

            # Paced below what the server can set up (a TrackOPZ connect costs a token lookup,
            # a lease and a snapshot query): a flood would only measure the DB pool's timeout.
            per_second = connect_rate or (CONNECT_RATE if system == "trackopz" else 500)
            conn = cl.connect(
                n,
                server.stream_path,
                headers,
                per_second=per_second,
                ready=ready,
                timeout=60 + n / 50,
            )
            if system != "trackopz":
                conn["ready"] = common.wait_subscribers(channel, subs0 + n, 120)
            time.sleep(2.0)
            rss1 = server.rss_kib()
            redis_during = common.redis_counts(channel)

            firer = _firer(system)
            srv = procs.CpuMeter(server.pids()).start()
            gen = procs.CpuMeter(cl.pids).start()
            with profiled(ctx, server, f"fanout-{system}-{n}", transitions / rate + 1):
                fired = asyncio.run(common.fire_paced(firer, http, transitions, rate))
                t0_of = firer.event_times()
                last = max(t0_of) if t0_of else 0
                reach = cl.reach(last, timeout=max(30, n / 200))
            srv_cpu, gen_cpu = srv.stop(), gen.stop()
            streams = cl.collect(since=firer.start_id)
            stats = cl.stats()
        d = common.deliveries(streams, t0_of)
        delivered = max(1, d["delivered"])
        out = {
            "system": system,
            "clients": n,
            "connected": conn,
            "transitions": transitions,
            "rate": rate,
            "events": len(t0_of),
            "fireSeconds": round(fired, 2),
            "windowSeconds": round(srv.wall, 2),
            "allReached": reach["ok"],
            "delivery": d,
            "serverCpuSeconds": round(srv_cpu, 3),
            "serverUsPerDelivery": round(srv_cpu / delivered * 1e6, 1),
            "genCpuSeconds": round(gen_cpu, 3),
            "genUsPerDelivery": round(gen_cpu / delivered * 1e6, 1),
            "rssKiB": {"idle": rss0, "withClients": rss1},
            "rssKiBPerClient": round((rss1 - rss0) / max(n, 1), 1),
            "redis": redis_during,
            "postErrors": firer.errors,
            "postLatency": common.summary_ms(firer.latencies),
            "unexpectedDisconnects": stats["lost"],
        }
        if baseline_cpu is not None:
            out["serverUsPerDeliveryNet"] = round(
                max(0.0, srv_cpu - baseline_cpu) / delivered * 1e6, 1
            )
        log(
            f"fanout {system} n={n}: p50 {d['p50']} ms p99 {d['p99']} ms max {d['max']} ms, "
            f"lost {d['lost']} dup {d['duplicated']}, server {out['serverUsPerDelivery']} us/delivery"
            f"{' (net ' + str(out.get('serverUsPerDeliveryNet')) + ')' if baseline_cpu is not None else ''}"
            f", gen {out['genUsPerDelivery']} us, RSS {out['rssKiBPerClient']} KiB/client, "
            f"redis {redis_during}"
        )
        return out
    finally:
        server.stop()


def _firer(system: str):
    return common.TrackopzFirer() if system == "trackopz" else common.FlaskSseFirer()


def write_cost(ctx: Ctx, system: str, transitions: int, rate: float) -> float:
    """Server CPU of the POSTs alone (no stream clients), to net out of the per-delivery cost."""
    server = procs.TrackOPZ(ctx.source) if system == "trackopz" else procs.FlaskSSE()
    server.start()
    try:
        http = ctx.http(server)
        asyncio.run(common.fire_paced(_firer(system), http, 3, 10))
        time.sleep(0.5)
        firer = _firer(system)
        m = procs.CpuMeter(server.pids()).start()
        asyncio.run(common.fire_paced(firer, http, transitions, rate))
        time.sleep(0.3)
        cpu = m.stop()
        log(f"write cost {system}: {transitions} POSTs took {cpu * 1000:.0f} ms of server CPU")
        return cpu
    finally:
        server.stop()


def fanout(ctx: Ctx, sizes: list[int], *, transitions: int, products: int) -> dict:
    ctx.ensure_dataset(products)
    runs = []
    for n in sizes:
        rate = rate_for(n)
        base = write_cost(ctx, "trackopz", transitions, rate)
        runs.append(
            fanout_run(ctx, "trackopz", n, transitions=transitions, rate=rate, baseline_cpu=base)
        )
    return {"runs": runs, "products": products}


def rate_for(n: int) -> float:
    """Transitions per second for N clients: spaced so one event's fan-out ends before the next."""
    if n <= 1000:
        return 2.0
    if n <= 5000:
        return 1.0
    return 0.5


def compare(ctx: Ctx, sizes: list[int], *, repeats: int, transitions: int, products: int) -> dict:
    """TrackOPZ and flask-sse, interleaved, same schedule, `repeats` times; medians and ratios."""
    ctx.ensure_dataset(products)
    procs.setup_flask_sse()
    out = {"sizes": {}, "repeats": repeats, "transitions": transitions}
    for n in sizes:
        rate = rate_for(n)
        runs = {"trackopz": [], "flask-sse": []}
        for rep in range(repeats):
            order = ["trackopz", "flask-sse"] if rep % 2 == 0 else ["flask-sse", "trackopz"]
            for system in order:
                runs[system].append(fanout_run(ctx, system, n, transitions=transitions, rate=rate))
        med = {}
        for system, rs in runs.items():
            med[system] = {
                "p50": common.median(r["delivery"]["p50"] for r in rs),
                "p99": common.median(r["delivery"]["p99"] for r in rs),
                "max": common.median(r["delivery"]["max"] for r in rs),
                "serverUsPerDelivery": common.median(r["serverUsPerDelivery"] for r in rs),
                "genUsPerDelivery": common.median(r["genUsPerDelivery"] for r in rs),
                "rssKiBPerClient": common.median(r["rssKiBPerClient"] for r in rs),
                "redisBenchClients": common.median(r["redis"]["benchDbClients"] for r in rs),
                "lost": sum(r["delivery"]["lost"] for r in rs),
                "duplicated": sum(r["delivery"]["duplicated"] for r in rs),
            }
        t, f = med["trackopz"], med["flask-sse"]
        ratio = {
            k: round(t[k] / f[k], 3) if f[k] else None
            for k in ("p50", "p99", "max", "serverUsPerDelivery", "rssKiBPerClient")
        }
        out["sizes"][str(n)] = {"rate": rate, "median": med, "ratio": ratio, "runs": runs}
        log(f"compare n={n}: trackopz/flask-sse ratios {ratio}")
    return out


# --- write path --------------------------------------------------------------------------------


def writes(
    ctx: Ctx,
    *,
    writers: list[int],
    seconds: float,
    products: int,
    mix_listeners: int = 1000,
    mix_rate: float = 20,
    mix_seconds: float = 15,
) -> dict:
    """Transitions/s at 1, 4, 16 writers with 10 listeners; then 1,000 listeners at 20/s."""
    ctx.ensure_dataset(products)
    out = {"runs": [], "products": products, "warmUpSeconds": WARM_UP_SECONDS}
    server = procs.TrackOPZ(ctx.source).start()
    try:
        http = ctx.http(server)
        with dataset.connect() as conn:
            pool = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM products WHERE state IS NOT NULL ORDER BY id DESC LIMIT 800"
                )
            ]
        with Clients(HOST, server.port, 1) as cl:
            cl.connect(10, server.stream_path, http.headers, per_second=0)
            # A new server's first seconds are slower (connections opened, statements compiled
            # and prepared, code run for the first time): fired at, not measured.
            _fire_for(http, _firers(pool, max(writers)), WARM_UP_SECONDS)
            for w in writers:
                res = _closed_loop(ctx, server, http, cl, w, seconds, pool)
                out["runs"].append(res)
            cl.close_streams()
    finally:
        server.stop()
    if mix_listeners:
        out["mix"] = _mix(ctx, mix_listeners, mix_rate, mix_seconds)
    return out


WARM_UP_SECONDS = 5.0


def _firers(pool: list[int], w: int) -> list[common.TrackopzFirer]:
    """`w` closed-loop writers, each on its own slice of the products, counting events from one
    start id."""
    per = max(2, len(pool) // max(w, 1) // 2)
    firers = [common.TrackopzFirer(pool[i * per : (i + 1) * per]) for i in range(w)]
    start_id = min(f.start_id for f in firers)
    for f in firers:
        f.start_id = start_id
    return firers


def _fire_for(http, firers: list[common.TrackopzFirer], seconds: float) -> float:
    """Each firer POSTs over its own keep-alive connection, one after the other, for `seconds`;
    the time it took."""

    async def run():
        deadline = time.monotonic() + seconds

        async def writer(f):
            async with common.Keepalive(http) as conn:
                i = 0
                while time.monotonic() < deadline:
                    await f.fire(conn, f.order[i % len(f.order)])
                    i += 1

        t0 = time.monotonic()
        await asyncio.gather(*(writer(f) for f in firers))
        return time.monotonic() - t0

    return common.run_fast(run())


def _closed_loop(ctx, server, http, cl, w: int, seconds: float, pool: list[int]) -> dict:
    firers = _firers(pool, w)
    start_id = firers[0].start_id
    srv = procs.CpuMeter(server.pids()).start()
    pg = procs.CpuMeter(procs.pids_of("postgres: ")).start()
    gen = procs.CpuMeter([os.getpid(), *cl.pids]).start()
    with profiled(ctx, server, f"writes-{w}", seconds):
        elapsed = _fire_for(http, firers, seconds)
    srv_cpu, pg_cpu, gen_cpu = srv.stop(), pg.stop(), gen.stop()
    lats = [x for f in firers for x in f.latencies]
    errors: Counter = Counter()
    for f in firers:
        errors.update(f.errors)
    t0_of: dict[int, float] = {}
    merged = common.TrackopzFirer.__new__(common.TrackopzFirer)
    merged.start_id = start_id
    merged.t0_by_transition = {k: v for f in firers for k, v in f.t0_by_transition.items()}
    t0_of = merged.event_times()
    reach = cl.reach(max(t0_of) if t0_of else 0, timeout=30)
    d = common.deliveries(cl.collect(since=start_id), t0_of)
    res = {
        "writers": w,
        "seconds": round(elapsed, 2),
        "ok": len(lats),
        "perSecond": round(len(lats) / elapsed, 1),
        "latency": common.summary_ms(lats),
        "errors": dict(errors),
        "serverCpuPerTransitionMs": round(srv_cpu / max(1, len(lats)) * 1000, 2),
        "postgresCpuPerTransitionMs": round(pg_cpu / max(1, len(lats)) * 1000, 2),
        # The writers, and the 10 listeners' process.
        "genCpuPerTransitionMs": round(gen_cpu / max(1, len(lats)) * 1000, 2),
        "listeners": {"allReached": reach["ok"], **d},
    }
    log(
        f"writes w={w}: {res['perSecond']}/s p50 {res['latency']['p50']} ms "
        f"p99 {res['latency']['p99']} ms, errors {dict(errors)}, listeners lost {d['lost']} "
        f"dup {d['duplicated']}; CPU ms/transition: server {res['serverCpuPerTransitionMs']}, "
        f"postgres {res['postgresCpuPerTransitionMs']}, generator {res['genCpuPerTransitionMs']}"
    )
    return res


def _mix(ctx: Ctx, listeners: int, rate: float, seconds: float) -> dict:
    server = procs.TrackOPZ(ctx.source).start()
    try:
        http = ctx.http(server)
        with Clients(HOST, server.port, gen_procs(listeners)) as cl:
            cl.connect(
                listeners,
                server.stream_path,
                http.headers,
                per_second=CONNECT_RATE,
                timeout=60 + listeners / 50,
            )
            firer = common.TrackopzFirer(pool=800)
            count = int(rate * seconds)
            srv = procs.CpuMeter(server.pids()).start()
            with profiled(ctx, server, f"mix-{listeners}", seconds):
                fired = asyncio.run(common.fire_paced(firer, http, count, rate, concurrency=8))
            t0_of = firer.event_times()
            reach = cl.reach(max(t0_of) if t0_of else 0, timeout=60)
            srv_cpu = srv.stop()
            d = common.deliveries(cl.collect(since=firer.start_id), t0_of)
        res = {
            "listeners": listeners,
            "rate": rate,
            "transitions": len(firer.latencies),
            "achievedRate": round(len(firer.latencies) / fired, 1),
            "postLatency": common.summary_ms(firer.latencies),
            "errors": firer.errors,
            "delivery": d,
            "allReached": reach["ok"],
            "serverCpuSeconds": round(srv_cpu, 2),
            "serverCpuShare": round(srv_cpu / max(srv.wall, 1e-9), 2),
        }
        log(
            f"mix {listeners} listeners at {rate}/s: delivery p50 {d['p50']} p99 {d['p99']} "
            f"max {d['max']} ms, lost {d['lost']} dup {d['duplicated']}"
        )
        return res
    finally:
        server.stop()


# --- reads -------------------------------------------------------------------------------------


def reads(ctx: Ctx, sizes: list[int], *, requests: int = 100) -> dict:
    out = {"sizes": {}}
    for products in sizes:
        ds = ctx.ensure_dataset(products)
        server = procs.TrackOPZ(ctx.source).start()
        try:
            http = ctx.http(server)
            res = asyncio.run(_read_run(http, requests))
            res["dataset"] = ds
            out["sizes"][str(products)] = res
            log(
                f"reads {products:,}: "
                + ", ".join(
                    f"{k} p50 {v['p50']} p99 {v['p99']} ms"
                    for k, v in res.items()
                    if isinstance(v, dict) and "p50" in v
                )
            )
            if ctx.profile:
                _profile_reads(ctx, server, http)
        finally:
            server.stop()
    return out


async def _read_run(http: env.Http, requests: int) -> dict:
    paths = {
        "dispatchable": "/api/live-products/dispatchable",
        "dashboard": "/api/dashboard/status",
    }
    out = {}
    async with common.session(http, limit=1) as s:
        async with s.get(paths["dispatchable"]) as r:
            job_id = (await r.json())["dispatchableProducts"][0]["jobId"]

        async def change() -> None:
            """An event that changes both answers: one unit of output on a live job."""
            update = {"operator": "bench", "quantity": 1}
            async with s.post(f"/api/jobs/{job_id}/updates", json=update) as r:
                if r.status != 201:
                    raise RuntimeError(f"logging output: {r.status} {await r.text()}")

        for name, path in paths.items():
            etag = None
            size = 0
            for _ in range(10):  # warm both workers' pools and caches
                async with s.get(path) as r:
                    body = await r.read()
                    etag = r.headers.get("ETag")
                    size = len(body)
                    if r.status != 200:
                        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
            lats = []
            for _ in range(requests):
                t0 = time.monotonic()
                async with s.get(path) as r:
                    await r.read()
                lats.append(time.monotonic() - t0)
            out[name] = {**common.summary_ms(lats), "bytes": size}
            lats = []
            for _ in range(requests):
                t0 = time.monotonic()
                async with s.get(path, headers={"If-None-Match": etag}) as r:
                    await r.read()
                    if r.status != 304:
                        raise RuntimeError(f"GET {path} with If-None-Match: {r.status}")
                lats.append(time.monotonic() - t0)
            out[name + "304"] = common.summary_ms(lats)
            # The first GET after a change builds the answer; the repeats above share it.
            lats = []
            for _ in range(requests):
                await change()
                t0 = time.monotonic()
                async with s.get(path) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"GET {path} after a change: {r.status}")
                lats.append(time.monotonic() - t0)
            out[name + "Changed"] = common.summary_ms(lats)
    return out


def _profile_reads(ctx: Ctx, server, http) -> None:
    async def hammer(path, seconds):
        async with common.session(http, limit=1) as s:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                async with s.get(path) as r:
                    await r.read()

    for name, path in (
        ("dispatchable", "/api/live-products/dispatchable"),
        ("dashboard", "/api/dashboard/status"),
    ):
        with profiled(ctx, server, f"reads-{name}", 6):
            asyncio.run(hammer(path, 6))


# --- reconnect storm ---------------------------------------------------------------------------


def _pg_counters() -> dict:
    with dataset.connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        db = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched FROM pg_stat_database "
            "WHERE datname = %s",
            (env.BENCH_DB,),
        ).fetchone()
        ev = conn.execute(
            "SELECT coalesce(seq_scan,0), coalesce(idx_scan,0), coalesce(idx_tup_fetch,0), "
            "coalesce(seq_tup_read,0) FROM pg_stat_user_tables WHERE relname = 'events'"
        ).fetchone()
    return {
        "xacts": db[0],
        "tupReturned": db[1],
        "tupFetched": db[2],
        "eventsSeqScans": ev[0],
        "eventsIdxScans": ev[1],
        "eventsRowsFetched": ev[2] + ev[3],
    }


def storm(ctx: Ctx, *, clients: int, behind: int, products: int) -> dict:
    """All clients drop, `behind` events are committed, all reconnect at once with Last-Event-ID."""
    ctx.ensure_dataset(products)
    server = procs.TrackOPZ(ctx.source).start()
    try:
        http = ctx.http(server)
        with Clients(HOST, server.port, gen_procs(clients)) as cl:
            conn = cl.connect(
                clients,
                server.stream_path,
                http.headers,
                per_second=CONNECT_RATE,
                timeout=60 + clients / 50,
            )
            last_seen = common.TrackopzFirer.max_id()
            cl.close_streams()
            time.sleep(1.5)
            firer = common.TrackopzFirer(pool=400)

            async def fire_until():
                async with common.session(http, limit=2) as s:
                    while common.TrackopzFirer.max_id() < last_seen + behind:
                        await firer.fire(s)

            asyncio.run(fire_until())
            target = common.TrackopzFirer.max_id()
            time.sleep(2.0)
            before = _pg_counters()
            srv = procs.CpuMeter(server.pids()).start()
            t0 = time.monotonic()
            with profiled(ctx, server, f"storm-{clients}", max(3, clients / 400)):
                rc = cl.connect(
                    clients,
                    server.stream_path,
                    {**http.headers, "Last-Event-ID": str(last_seen)},
                    per_second=0,
                    timeout=120,
                )
                reach = cl.reach(target, timeout=120)
            srv_cpu = srv.stop()
            time.sleep(2.5)  # let every backend flush its statistics
            after = _pg_counters()
            streams = cl.collect(since=last_seen)
        expected = set(range(last_seen + 1, target + 1))
        caught = []
        lost = dup = 0
        for ids, times in streams:
            got = [i for i in ids if i in expected]
            dup += len(got) - len(set(got))
            lost += len(expected - set(got))
            t_target = [t for i, t in zip(ids, times, strict=True) if i == target]
            if t_target:
                caught.append(t_target[0] - t0)
        all_in = max(caught) if len(caught) == len(streams) else float("inf")
        delta = {k: after[k] - before[k] for k in after}
        res = {
            "clients": clients,
            "connectedFirst": conn["hellos"],
            "eventsBehind": target - last_seen,
            "reconnected": rc["hellos"],
            "allCaughtUp": reach["ok"],
            "secondsUntilAllCaughtUp": round(all_in, 2),
            "catchUp": common.summary_ms(caught),
            "lost": lost,
            "duplicated": dup,
            "serverCpuSeconds": round(srv_cpu, 2),
            "db": delta,
            "dbPerClient": {k: round(v / clients, 2) for k, v in delta.items()},
        }
        log(
            f"storm {clients} clients {target - last_seen} behind: all caught up in "
            f"{res['secondsUntilAllCaughtUp']} s, lost {lost} dup {dup}, db {res['dbPerClient']}"
        )
        return res
    finally:
        server.stop()


def dump(name: str, data: dict) -> Path:
    env.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = env.RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    return path

"""The bench's own Postgres database and a factory-like history, bulk-loaded with COPY.

Shape (stated in docs/PERFORMANCE.md): 12 machines (the seed's line), every product has
`jobs` jobs (one per stage of its route, routes rotated per product so every machine has work),
the newest `live` fraction of products (default 2%) is live (latest job ON), the rest are past
(latest job OFF); 90% of the past ones were dispatched (a Dispatch row), the others moved to past
by hand. Each job has one operator update whose quantity is the job's quantityProduced. Every
job start, stage completion and move to past has its Transition row, as the service writes them
(about 2 per job). products.latest_job_id / state / state_changed_at agree with the jobs, and only
the latest job of a product can be ON. History spans the last 365 days; events hold the last
`events` transitions' events (the outbox keeps ~30 days; only max(id) and the recent tail matter).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta

import psycopg

from bench import env

# Bump when the shape of the loaded data changes: cached templates are keyed on it.
LOADER_VERSION = "1"

MACHINES = [
    "Cutting",
    "CNC Turning Soft-1",
    "CNC Turning Soft-2",
    "Gun Drilling",
    "Heat Treatment",
    "CNC Turning Hard-1",
    "CNC Turning Hard-2",
    "Grinding",
    "Flat Milling VMC",
    "Profile CNC",
    "PDI",
    "RFD",
]
PRODUCT_NAMES = ["Shaft", "Flange", "Bushing", "Gear Blank", "Spindle", "Hub", "Coupling", "Pin"]
OPERATORS = ["ana", "ravi", "li", "sam", "omar", "eva", "kofi", "mia"]
DESTINATIONS = ["Customer A", "Customer B", "Warehouse 2", "Export"]


def admin():
    return psycopg.connect(env.pg_url("postgres"), autocommit=True)


def connect():
    return psycopg.connect(env.pg_url(), autocommit=True)


def ensure_database(source: env.Source, *, fresh: bool = False) -> None:
    """Create trackopz_bench if missing (or anew) and bring it to the source's migrations."""
    with admin() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (env.BENCH_DB,)
        ).fetchone()
        if exists and fresh:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (env.BENCH_DB,),
            )
            conn.execute(f"DROP DATABASE {env.BENCH_DB}")
            exists = None
        if not exists:
            conn.execute(f"CREATE DATABASE {env.BENCH_DB}")
    subprocess.run(
        [str(env.VENV_BIN / "flask"), "--app", "wsgi", "db", "upgrade"],
        cwd=source.root,
        env={**os.environ, "DATABASE_URL": env.pg_url(), "REDIS_URL": ""},
        check=True,
        capture_output=True,
        timeout=180,
    )


def _template_name(source: env.Source, products: int) -> str:
    """A cached copy of a loaded dataset, keyed by the migrations and this loader's code."""
    import hashlib

    h = hashlib.sha1(LOADER_VERSION.encode())
    for f in sorted((source.root / "migrations" / "versions").glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return f"{env.BENCH_DB}_tpl_{products}_{h.hexdigest()[:10]}"


def prepare(source: env.Source, products: int, *, quiet: bool = False) -> dict:
    """The bench database with `products` products: from a cached template, else loaded (COPY)."""
    tpl = _template_name(source, products)
    with admin() as conn:
        have = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (tpl,)).fetchone()
        info = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (tpl,),
        ).fetchone()
    if have:
        t0 = time.monotonic()
        with admin() as conn:
            _drop(conn, env.BENCH_DB)
            conn.execute(f"CREATE DATABASE {env.BENCH_DB} TEMPLATE {tpl}")
        counts = json.loads(info[0]) if info and info[0] else {"products": products}
        counts["copiedFromTemplateSeconds"] = round(time.monotonic() - t0, 1)
        if not quiet:
            print(f"  {products:,} products: copied the cached dataset {tpl}", flush=True)
        return counts
    ensure_database(source, fresh=True)
    counts = load(products, quiet=quiet)
    with admin() as conn:
        # drop older templates of this size (other code or migrations)
        prefix = f"{env.BENCH_DB}_tpl_{products}_"
        for (old,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            if old.startswith(prefix):
                _drop(conn, old)
        _drop(conn, tpl)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (env.BENCH_DB,),
        )
        conn.execute(f"CREATE DATABASE {tpl} TEMPLATE {env.BENCH_DB}")
        from psycopg import sql

        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(tpl), sql.Literal(json.dumps(counts))
            )
        )
    return counts


def drop_templates() -> None:
    with admin() as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            if name.startswith(f"{env.BENCH_DB}_tpl_"):
                _drop(conn, name)


def _drop(conn, name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    conn.execute(f"DROP DATABASE IF EXISTS {name}")


def _ts(dt: datetime) -> str:
    return dt.isoformat(" ")


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


N = "\\N"


class _Copy:
    """Rows of one table in COPY text format; written by `close()` (one COPY at a time)."""

    def __init__(self, cur, table: str, cols: list[str]):
        self.cur = cur
        self.sql = f"COPY {table} ({', '.join(cols)}) FROM STDIN"
        self.buf: list[str] = []
        self.rows = 0

    def row(self, *values) -> None:
        self.buf.append("\t".join(N if v is None else str(v) for v in values))
        self.rows += 1

    def close(self) -> None:
        with self.cur.copy(self.sql) as copy:
            for i in range(0, len(self.buf), 50000):
                copy.write(("\n".join(self.buf[i : i + 50000]) + "\n").encode())
        self.buf = []


def load(
    products: int,
    *,
    jobs: int = 10,
    live: float = 0.02,
    events: int = 3000,
    seed: int = 7,
    quiet: bool = False,
) -> dict:
    """Empty the bench database and load `products` products with `jobs` jobs each."""
    import random

    rng = random.Random(seed)
    t_start = time.monotonic()
    now = datetime.utcnow().replace(microsecond=0)
    span = timedelta(days=365)
    job_gap = timedelta(hours=2)
    first_live = products - max(1, round(products * live)) + 1 if live > 0 else products + 1
    counts = {"products": products, "jobs": 0, "transitions": 0, "updates": 0, "dispatches": 0}

    with connect() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename <> 'alembic_version'"
            )
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        # Secondary indexes are dropped for the load and rebuilt from their own definitions.
        secondary = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        ).fetchall()
        for name, _ in secondary:
            conn.execute(f'DROP INDEX "{name}"')
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")  # FKs checked by us
            cur = conn.cursor()
            mc = _Copy(
                cur, "machines", ["id", "name", "code", "status", "created_at", "updated_at"]
            )
            running = set()
            m_created = now - span - timedelta(days=30)
            # which machines have an ON job: the live products' last stage
            for p in range(first_live, products + 1):
                running.add((p + jobs - 1) % len(MACHINES) + 1)
            for i, name in enumerate(MACHINES, start=1):
                mc.row(
                    i,
                    name,
                    f"M-{i:02d}",
                    "running" if i in running else "idle",
                    _ts(m_created),
                    _ts(now - timedelta(hours=1)),
                )
            mc.close()

            pc = _Copy(
                cur,
                "products",
                [
                    "id",
                    "name",
                    "code",
                    "description",
                    "created_at",
                    "latest_job_id",
                    "state",
                    "state_changed_at",
                ],
            )
            jc = _Copy(
                cur,
                "jobs",
                [
                    "id",
                    "product_id",
                    "machine_id",
                    "stage",
                    "operator",
                    "quantity_planned",
                    "quantity_produced",
                    "state",
                    "created_at",
                    "updated_at",
                    "ended_at",
                ],
            )
            tc = _Copy(
                cur,
                "transitions",
                [
                    "id",
                    "product_id",
                    "job_id",
                    "from_state",
                    "to_state",
                    "action",
                    "reason",
                    "actor",
                    "created_at",
                ],
            )
            uc = _Copy(
                cur,
                "operator_product_updates",
                [
                    "id",
                    "job_id",
                    "product_id",
                    "operator",
                    "quantity",
                    "scrap_quantity",
                    "note",
                    "created_at",
                ],
            )
            dc = _Copy(
                cur,
                "dispatches",
                [
                    "id",
                    "product_id",
                    "job_id",
                    "quantity",
                    "destination",
                    "notes",
                    "dispatched_by",
                    "created_at",
                ],
            )
            step = span / max(products, 1)
            tid = uid = did = 0
            tail: list[tuple] = []  # (type, payload, created_at) of the newest transitions
            for p in range(1, products + 1):
                is_live = p >= first_live
                start = now - timedelta(hours=2 * jobs + 4) - step * (products - p)
                pname = f"{PRODUCT_NAMES[p % len(PRODUCT_NAMES)]} {p:06d}"
                base_job = (p - 1) * jobs
                prev_state = None
                state_changed = None
                for k in range(1, jobs + 1):
                    jid = base_job + k
                    mid = (p + k - 1) % len(MACHINES) + 1
                    created = start + job_gap * (k - 1)
                    last = k == jobs
                    on = last and is_live
                    planned = 100
                    produced = rng.randint(30, 90) if on else rng.randint(95, 100)
                    ended = None if on else created + job_gap - timedelta(minutes=5)
                    op = OPERATORS[(p + k) % len(OPERATORS)]
                    jc.row(
                        jid,
                        p,
                        mid,
                        _esc(MACHINES[mid - 1]),
                        op,
                        planned,
                        produced,
                        "ON" if on else "OFF",
                        _ts(created),
                        _ts(ended or created + timedelta(minutes=30)),
                        _ts(ended) if ended else None,
                    )
                    counts["jobs"] += 1
                    # the job started: previous job completed in the same transaction
                    if k > 1:
                        tid += 1
                        tc.row(
                            tid,
                            p,
                            jid - 1,
                            "ON",
                            "OFF",
                            "complete_stage",
                            "next stage started",
                            op,
                            _ts(created),
                        )
                    tid += 1
                    tc.row(
                        tid,
                        p,
                        jid,
                        prev_state or N,
                        "ON",
                        "start_job",
                        _esc(MACHINES[mid - 1]),
                        op,
                        _ts(created),
                    )
                    if prev_state != "ON":
                        state_changed = created
                    prev_state = "ON"
                    uid += 1
                    uc.row(
                        uid,
                        jid,
                        p,
                        op,
                        produced,
                        rng.randint(0, 3),
                        None,
                        _ts(created + timedelta(minutes=30)),
                    )
                    if last and not on:
                        dispatched = rng.random() < 0.9
                        tid += 1
                        tc.row(
                            tid,
                            p,
                            jid,
                            "ON",
                            "OFF",
                            "move_to_past",
                            "dispatched" if dispatched else "manual",
                            op,
                            _ts(ended),
                        )
                        if dispatched:
                            did += 1
                            dc.row(did, p, jid, produced, DESTINATIONS[p % 4], None, op, _ts(ended))
                        state_changed = ended
                        prev_state = "OFF"
                        if products - p < events:
                            tail.append(
                                (
                                    "product_moved_to_past",
                                    {
                                        "productId": p,
                                        "productName": pname,
                                        "jobId": jid,
                                        "previousState": "ON",
                                        "newState": "OFF",
                                        "action": "move_to_past",
                                        "reason": "dispatched" if dispatched else "manual",
                                        "actor": op,
                                        "transitionId": tid,
                                    },
                                    ended,
                                )
                            )
                pc.row(
                    p,
                    pname,
                    f"P-{p:06d}",
                    None,
                    _ts(start - timedelta(hours=1)),
                    base_job + jobs,
                    prev_state,
                    _ts(state_changed),
                )
            for c in (pc, jc, tc, uc, dc):
                c.close()
            counts.update(transitions=tid, updates=uid, dispatches=did)
            ec = _Copy(cur, "events", ["id", "type", "payload", "created_at"])
            tail.sort(key=lambda t: t[2])
            for i, (type_, payload, created) in enumerate(tail[-events:], start=1):
                ec.row(i, type_, _esc(json.dumps(payload, separators=(",", ":"))), _ts(created))
            ec.close()
            counts["events"] = min(len(tail), events)
        for _, indexdef in secondary:
            conn.execute(indexdef)
        for table in (
            "machines",
            "products",
            "jobs",
            "transitions",
            "operator_product_updates",
            "dispatches",
            "events",
        ):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"GREATEST((SELECT max(id) FROM {table}), 1))"
            )
        conn.execute("VACUUM ANALYZE")
    counts["live"] = products - first_live + 1 if live > 0 else 0
    counts["loadSeconds"] = round(time.monotonic() - t_start, 1)
    if not quiet:
        print(
            f"  loaded {products:,} products, {counts['jobs']:,} jobs, "
            f"{counts['transitions']:,} transitions, {counts['live']:,} live "
            f"in {counts['loadSeconds']} s",
            flush=True,
        )
    return counts


def state_of(conn, product_ids: list[int]) -> dict[int, str]:
    rows = conn.execute(
        "SELECT id, state FROM products WHERE id = ANY(%s)", (product_ids,)
    ).fetchall()
    return dict(rows)


def max_event_id(conn) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

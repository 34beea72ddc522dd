"""Where the bench runs: its database, its Redis db, the app source, the machine, the HTTP session.

Everything a scenario needs to know about the world lives here, so that a change of setup (a new
sign-in layer, another Redis db) is one edit.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent
FLASK_SSE_VENV = BENCH_DIR / ".venv-flask-sse"

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
BENCH_DB = os.environ.get("BENCH_DB", "trackopz_bench")
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
# Keys live in this db index; pub/sub channels are server-wide, so ours carry a prefix too.
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "13"))
REDIS_CHANNEL = "trackopz-bench:events"
FLASK_SSE_CHANNEL = "trackopz-bench:flask-sse"


def pg_url(dbname: str = BENCH_DB, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def redis_url() -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def raise_nofile(want: int = 1_048_576) -> int:
    """Raise RLIMIT_NOFILE as far as the hard limit allows; children (gunicorn) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the app under test ---------------------------------------------------------------------


@dataclass
class Source:
    """The TrackOPZ tree that is served: the work tree, or a clean export of a commit."""

    root: Path
    label: str
    rev: str
    dirty: bool = False

    @property
    def python(self) -> Path:
        return VENV_BIN / "python"


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def resolve_source(spec: str, patches: list[str] | None = None) -> Source:
    """The tree to serve, with `patches` (unified diffs, -p1) applied to a copy of it."""
    src = _resolve_source(spec)
    if not patches:
        return src
    import shutil

    names = "+".join(Path(p).stem for p in patches)
    dest = RESULTS_DIR / f"patched-{src.rev}-{names}"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        src.root, dest, ignore=shutil.ignore_patterns(".venv", ".git", "bench", "node_modules")
    )
    for p in patches:
        subprocess.run(
            ["patch", "-s", "-p1", "-d", str(dest), "-i", str(Path(p).resolve())], check=True
        )
    return Source(dest, f"{src.label} + {names}", src.rev, True)


def _resolve_source(spec: str) -> Source:
    """`tree` (the work tree as it is), `head` (git archive of HEAD), a path to a tree, or a
    commit (git archive of it)."""
    rev = git("rev-parse", "--short", "HEAD")
    if spec == "tree":
        dirty = bool(
            git("status", "--porcelain", "--", "app", "migrations", "config.py", "wsgi.py")
        )
        return Source(
            REPO, "work tree" + (" (uncommitted changes in app/)" if dirty else ""), rev, dirty
        )
    if spec == "head":
        return Source(_export("HEAD", rev), f"clean export of HEAD {rev}", rev)
    path = Path(spec).resolve()
    if (path / "wsgi.py").exists():
        return Source(path, f"tree at {path}", rev, True)
    try:  # a commit: a before/after pair in one session, e.g. --source HEAD~2
        rev = git("rev-parse", "--short", spec + "^{commit}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--source {spec}: neither head, tree, a path nor a commit") from None
    return Source(_export(rev, rev), f"clean export of {rev}", rev)


def _export(treeish: str, rev: str) -> Path:
    """`git archive` of a commit into bench/results, once per commit."""
    dest = RESULTS_DIR / f"src-{rev}"
    if not (dest / "wsgi.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", treeish], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    pg = redis_v = "?"
    try:
        pg = subprocess.run(
            ["psql", "-h", PG_HOST, "-U", PG_USER, "-Atc", "show server_version", "postgres"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except Exception:
        pass
    try:
        import redis

        redis_v = redis.Redis(host=REDIS_HOST, port=REDIS_PORT).info("server")["redis_version"]
    except Exception:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ramGiB": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg,
        "redis": redis_v,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg": Path("/proc/loadavg").read_text().split()[0],
    }


# --- a settled machine: what one scenario leaves must not slow the next ---------------------

SETTLED_TIME_WAIT = 1000  # TCP sockets in TIME_WAIT a scenario may start with
SETTLE_TIMEOUT = 90.0  # TIME_WAIT lasts 60 s on Linux


def time_wait_sockets() -> int:
    """TCP sockets in TIME_WAIT (/proc/net/sockstat's `tw`: the kernel counts IPv4 and IPv6
    there together; sockstat6 has no such field)."""
    try:
        lines = Path("/proc/net/sockstat").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        if fields[:1] == ["TCP:"] and "tw" in fields:
            return int(fields[fields.index("tw") + 1])
    return 0


def settle() -> dict:
    """Wait until the sockets the last scenario closed have left TIME_WAIT (at most
    SETTLE_TIMEOUT), so that a scenario of the full bench starts as it would alone: a run of
    10,000 clients leaves ~10,000 for a minute. Whether the sockets themselves slow the next
    scenario is not known (a writes run right after 5,000 clients, theirs still in TIME_WAIT,
    was not slow), but the slow minutes after many-client runs pass within about that one: with
    this wait the full bench's writes went from 488-491 to 693/s (docs/PERFORMANCE.md, 1)."""
    started = time.monotonic()
    first = now = time_wait_sockets()
    while now >= SETTLED_TIME_WAIT and time.monotonic() - started < SETTLE_TIMEOUT:
        time.sleep(1)
        now = time_wait_sockets()
    return {
        "timeWaitBefore": first,
        "timeWaitAtStart": now,
        "waitedSeconds": round(time.monotonic() - started, 1),
    }


# --- the HTTP session: every request the bench makes carries these headers -----------------


@dataclass
class Http:
    """Base URL and headers; `auth()` fetches a token once the API asks for one (401)."""

    base: str
    headers: dict = field(default_factory=dict)

    def auth(self, source: Source, env: dict) -> None:
        """If the API answers 401, create a bench user and token with the app's CLI."""
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(self.base + "/api/live-products/dispatchable", timeout=10)
            return
        except urllib.error.HTTPError as err:
            if err.code not in (401, 403):
                raise
        self.headers["Authorization"] = "Bearer " + create_token(source, env)


def create_token(source: Source, env: dict, user: str = "bench") -> str:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "flask"), "--app", "wsgi", *args],
            cwd=source.root,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = cli("tokens", "create", "--user", user, "--name", "bench")
    if out.returncode != 0:
        cli("users", "create", user, "--role", "manager", "--password", "bench-password-123")
        out = cli("tokens", "create", "--user", user, "--name", "bench")
    if out.returncode != 0:
        raise SystemExit(f"the API wants a token and the CLI would not make one:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1].strip()


def now() -> float:
    return time.monotonic()

"""Servers under test (TrackOPZ and the flask-sse baseline on gunicorn) and /proc readings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from bench import env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /proc -------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """On-CPU time of a process (all its threads), in seconds; schedstat has nanoseconds."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def pids_of(prefix: str) -> list[int]:
    """Processes whose command line starts with `prefix` (PostgreSQL's are "postgres: ...")."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(prefix.encode()):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


class CpuMeter:
    """CPU seconds of a fixed set of processes between start() and stop()."""

    def __init__(self, pids: list[int]):
        self.pids = list(pids)
        self.t0 = 0.0
        self.c0: dict[int, float] = {}
        self.wall = 0.0
        self.cpu = 0.0

    def start(self) -> CpuMeter:
        self.c0 = {p: cpu_seconds(p) for p in self.pids}
        self.t0 = time.monotonic()
        return self

    def stop(self) -> float:
        self.wall = time.monotonic() - self.t0
        self.cpu = sum(max(0.0, cpu_seconds(p) - c) for p, c in self.c0.items())
        return self.cpu


# --- gunicorn instances --------------------------------------------------------------------


class Server:
    """One gunicorn master with its workers, started from `cwd` with `argv`."""

    name = "server"

    def __init__(self, argv: list[str], cwd: Path, env_vars: dict, workers: int, port: int):
        self.argv = argv
        self.cwd = cwd
        self.env = env_vars
        self.workers = workers
        self.port = port
        self.proc: subprocess.Popen | None = None
        env.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = env.RESULTS_DIR / f"{self.name}-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, health: str = "/healthz", timeout: float = 30) -> Server:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + health, timeout=1) as r:
                    if r.status == 200 and len(self.worker_pids()) >= self.workers:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer in {timeout}s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc else []

    def pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc else []) + self.worker_pids()

    def rss_kib(self) -> int:
        return sum(rss_kib(p) for p in self.pids())

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None
        self._log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def trackopz_env(*, workers: int, port: int, keepalive: float = 300.0, extra: dict | None = None):
    return {
        "DATABASE_URL": env.pg_url(),
        "REDIS_URL": env.redis_url(),
        "REDIS_CHANNEL": env.REDIS_CHANNEL,
        "WEB_CONCURRENCY": str(workers),
        "WORKER_CONNECTIONS": "30000",
        "PORT": str(port),
        "BIND": f"127.0.0.1:{port}",
        "SSE_KEEPALIVE_SECONDS": str(keepalive),
        "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        "SECRET_KEY": "bench-" + "0123456789abcdef" * 4,
        # The limiter stays on (its Redis round trip is part of every write), its ceiling raised:
        # the bench writes as one user, far past a person's 1200 writes a minute.
        "WRITE_RATE_LIMIT": "10000000 per minute",
        # Likewise the per-user stream cap (20): every bench client is the same user. The lease
        # machinery stays on (a Redis script per connect, renewals), only its ceiling is raised.
        "STREAMS_PER_USER": "1000000",
        **(extra or {}),
    }


class TrackOPZ(Server):
    name = "trackopz"

    def __init__(
        self, source: env.Source, *, workers: int = 2, keepalive: float = 300.0, extra=None
    ):
        port = free_port()
        super().__init__(
            [str(env.VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            source.root,
            trackopz_env(workers=workers, port=port, keepalive=keepalive, extra=extra),
            workers,
            port,
        )
        self.stream_path = "/api/live-products/dispatchable/stream"


class FlaskSSE(Server):
    """The baseline: flask-sse's blueprint on gunicorn gevent, in its own venv."""

    name = "flask-sse"

    def __init__(self, *, workers: int = 2):
        port = free_port()
        bin_dir = env.FLASK_SSE_VENV / "bin"
        if not (bin_dir / "gunicorn").exists():
            raise SystemExit(
                f"no flask-sse venv at {env.FLASK_SSE_VENV}: run `python -m bench setup-flask-sse`"
            )
        super().__init__(
            [
                str(bin_dir / "gunicorn"),
                "-k",
                "gevent",
                "-w",
                str(workers),
                "--worker-connections",
                "30000",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "flask_sse_app:app",
            ],
            env.BENCH_DIR,
            {
                "FLASK_SSE_REDIS_URL": env.redis_url(),
                "FLASK_SSE_CHANNEL": env.FLASK_SSE_CHANNEL,
                "PYTHONUNBUFFERED": "1",
            },
            workers,
            port,
        )
        self.stream_path = f"/api/live-products/dispatchable/stream?channel={env.FLASK_SSE_CHANNEL}"


def setup_flask_sse() -> None:
    """Make bench/.venv-flask-sse with flask-sse and the same gunicorn/gevent as the app."""
    if (env.FLASK_SSE_VENV / "bin" / "gunicorn").exists():
        return
    py = os.environ.get("PYTHON", "python3.11")
    subprocess.run([py, "-m", "venv", str(env.FLASK_SSE_VENV)], check=True)
    subprocess.run(
        [
            str(env.FLASK_SSE_VENV / "bin" / "pip"),
            "install",
            "--quiet",
            "-r",
            str(env.BENCH_DIR / "requirements-flask-sse.txt"),
        ],
        check=True,
    )

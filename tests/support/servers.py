"""Real gunicorn processes for tests: start, wait until they answer, always stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flask_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    """`flask --app wsgi ...` in a child process with `env` on top of ours."""
    return subprocess.run(
        [str(BIN / "flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class Gunicorn:
    """One gunicorn instance (a "host") with its own port and workers."""

    def __init__(self, env: dict, *, workers: int = 2, port: int | None = None, log_dir: Path):
        self.port = port or free_port()
        self.workers = workers
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "PYTHONUNBUFFERED": "1",
            "SECRET_KEY": "test-only-secret",
            **env,
        }
        self.log_path = Path(log_dir) / f"gunicorn-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Gunicorn:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200 and (
                    len(self.worker_pids()) >= self.workers
                ):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer in {timeout}s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None
        self._log.close()

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def make_token(env: dict, *, name: str = "tester", role: str = "manager") -> str:
    """A user with `role` (made if missing) and a fresh API token for them, via the real CLI."""
    try:
        flask_cli("users", "create", name, "--role", role, "--password", "test-password", env=env)
    except subprocess.CalledProcessError as err:
        if "already exists" not in (err.stderr or "") + (err.stdout or ""):
            raise
    out = flask_cli("tokens", "create", "--user", name, env=env).stdout
    return out.strip().splitlines()[-1]


def auth_session(token: str) -> requests.Session:
    """A requests session that acts as the token's user."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session

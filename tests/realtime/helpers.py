"""Helpers for the real-time tests: a reconnecting SSE reader, which worker holds a connection,
and a redis-server of the tests' own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import requests
from sseclient import SSEClient

from tests.support.servers import free_port

STREAM = "/api/live-products/dispatchable/stream"


class StreamReader(threading.Thread):
    """One page with an EventSource: reads the stream with a standards-following SSE parser and,
    when the connection drops, reconnects with Last-Event-ID as a browser does.

    Records every event (id, type, data), every connection_established, every connection's
    local port, and anything that breaks the contract (in `problems`).
    """

    def __init__(self, base_url: str, session_factory, *, reconnect: bool = True, name: str = ""):
        super().__init__(name=name or "sse-reader", daemon=True)
        self.base_url = base_url
        self.session = session_factory()
        self.reconnect = reconnect
        self.events: list[tuple[int, str, dict]] = []
        self.hellos: list[dict] = []
        self.problems: list[str] = []
        self.ports: list[int] = []
        self.connects = 0
        self.last_id: int | None = None
        self.first_last_id: int | None = None
        self.chunk_times: list[float] = []
        self.keepalives = 0
        self.ready = threading.Event()
        self._halt = threading.Event()
        self._changed = threading.Condition()

    # --- running ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self._halt.is_set():
            headers = {}
            if self.last_id is not None:
                headers["Last-Event-ID"] = str(self.last_id)
            try:
                with self.session.get(
                    self.base_url + STREAM, headers=headers, stream=True, timeout=(5, 15)
                ) as resp:
                    self._check_headers(resp)
                    self.ports.append(_local_port(resp))
                    self.connects += 1
                    for event in SSEClient(self._chunks(resp)).events():
                        self._on_event(event)
            except (requests.RequestException, OSError, ValueError):
                pass
            if not self.reconnect:
                break
            time.sleep(0.2)

    def _chunks(self, resp):
        for chunk in resp.iter_content(chunk_size=None):
            self.chunk_times.append(time.monotonic())
            for line in chunk.split(b"\n"):
                if line.startswith(b"event:"):
                    self.problems.append(f"an event: line {line!r}")
                if line.startswith(b": keepalive"):
                    self.keepalives += 1
            yield chunk
            if self._halt.is_set():
                return

    def _check_headers(self, resp) -> None:
        if resp.status_code != 200:
            self.problems.append(f"status {resp.status_code}: {resp.text[:200]}")
            raise ValueError("not a stream")
        for name, value in (
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ):
            if not resp.headers.get(name, "").startswith(value):
                self.problems.append(f"header {name}: {resp.headers.get(name)!r}")

    def _on_event(self, event) -> None:
        if event.event != "message":
            self.problems.append(f"named event {event.event!r}")
        message = json.loads(event.data)
        if message["type"] == "connection_established":
            if event.id:
                self.problems.append("connection_established with an id")
            self.hellos.append(message)
            if self.last_id is None:  # no event yet: resume from the snapshot's id
                self.last_id = message["data"]["lastEventId"]
                self.first_last_id = self.last_id
            self.ready.set()
        else:
            if not event.id:
                self.problems.append(f"{message['type']} without an id")
                return
            self.events.append((int(event.id), message["type"], message["data"]))
            self.last_id = int(event.id)
        with self._changed:
            self._changed.notify_all()

    # --- asking -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._halt.set()

    @property
    def ids(self) -> list[int]:
        return [e[0] for e in self.events]

    def wait_for(self, event_id: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self.last_id or 0) < event_id:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True


def start_readers(base_url: str, session_factory, n: int, **kw) -> list[StreamReader]:
    readers = [StreamReader(base_url, session_factory, name=f"sse-{i}", **kw) for i in range(n)]
    for r in readers:
        r.start()
    for r in readers:
        assert r.ready.wait(15), f"{r.name} got no connection_established: {r.problems}"
    return readers


def stop_readers(readers: list[StreamReader]) -> None:
    for r in readers:
        r.stop()
    for r in readers:
        r.join(timeout=20)


def _local_port(resp) -> int:
    try:
        return resp.raw.connection.sock.getsockname()[1]
    except AttributeError:
        return 0


# --- which worker holds a connection ------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _tcp_peers(server_port: int) -> dict[str, int]:
    """inode -> remote port of the established connections accepted on `server_port`."""
    peers = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state != "01":  # ESTABLISHED
                continue
            if int(local.rsplit(":", 1)[1], 16) == server_port:
                peers[inode] = int(remote.rsplit(":", 1)[1], 16)
    return peers


def workers_of(server_port: int, worker_pids: list[int]) -> dict[int, int]:
    """client port -> worker pid, for the connections the workers hold on `server_port`."""
    peers = _tcp_peers(server_port)
    owner = {}
    for pid in worker_pids:
        for inode in _socket_inodes(pid):
            if inode in peers:
                owner[peers[inode]] = pid
    return owner


def reader_workers(readers: list[StreamReader], server_port: int, pids: list[int]) -> dict:
    """worker pid -> the readers whose current connection it holds."""
    owner = workers_of(server_port, pids)
    by_pid: dict[int, list[StreamReader]] = {pid: [] for pid in pids}
    for r in readers:
        pid = owner.get(r.ports[-1]) if r.ports else None
        if pid is not None:
            by_pid[pid].append(r)
    return by_pid


# --- a redis-server of our own ------------------------------------------------------------------


class RedisServer:
    """A throwaway redis-server on a free port, which a test may stop and start again."""

    def __init__(self, binary: str, log_dir: Path):
        self.binary = binary
        self.port = free_port()
        self.log_path = Path(log_dir) / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

"""The load generator: many SSE clients per process, lean on purpose.

Each process runs one asyncio loop (uvloop when installed) with a bare `asyncio.Protocol` per
stream: one hand-written GET, no HTTP library on the read path, and per read one scan for
`\\nid:` lines (works through chunked framing: a frame never spans two chunks, and chunk-size
lines never start with `id:`). Per received event it stores the id and the receive time
(`time.monotonic()`, one clock for every process of the machine) in two arrays. The parent
drives the processes over a pipe (connect / wait / collect / close) and reads their CPU from
/proc, so the generator's own cost per delivery is known and kept apart from the server's.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from array import array

from bench import env


class Stream(asyncio.Protocol):
    __slots__ = ("fleet", "req", "tr", "buf", "ids", "times", "status", "hello", "done", "open")

    def __init__(self, fleet: Fleet, req: bytes):
        self.fleet = fleet
        self.req = req
        self.tr = None
        self.buf = b""
        self.ids = array("q")
        self.times = array("d")
        self.status = 0
        self.hello = False
        self.done = False
        self.open = False

    def connection_made(self, tr) -> None:
        self.tr = tr
        self.open = True
        tr.write(self.req)
        self.fleet.on_made(self)

    def data_received(self, data: bytes) -> None:
        t = time.monotonic()
        if self.buf:
            data = self.buf + data
        end = data.rfind(b"\n")
        if end < 0:
            self.buf = data
            return
        if self.status == 0:
            self.status = int(data[9:12]) if data[:5] == b"HTTP/" else -1
            if self.status != 200:
                self.fleet.on_failed(self)
                self.tr.close()
                return
        if not self.hello and data.find(b'"connection_established"', 0, end) >= 0:
            self.hello = True
            self.fleet.on_hello(self)
        find = data.find
        ids = self.ids
        i = find(b"\nid:", 0, end)
        if i >= 0:
            times = self.times
            while i >= 0:
                j = find(b"\n", i + 4)
                ids.append(int(data[i + 4 : j]))
                times.append(t)
                i = find(b"\nid:", j, end)
            if not self.done and ids[-1] >= self.fleet.target:
                self.done = True
                self.fleet.on_done(self, t)
        self.buf = data[end:]

    def connection_lost(self, exc) -> None:
        self.open = False
        self.fleet.on_lost(self)


class Fleet:
    """The streams of one process."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.streams: list[Stream] = []
        self.target = 1 << 62
        self.made = self.hellos = self.failed = self.lost = self.reached = 0
        self.closing = False
        self.last_done = 0.0
        self.waiter: asyncio.Event | None = None
        self.want = 0
        self.counter = "hellos"

    # counters, and a wake-up when one reaches what a command waits for
    def _check(self) -> None:
        if self.waiter is not None and getattr(self, self.counter) >= self.want:
            self.waiter.set()

    def on_made(self, s: Stream) -> None:
        self.made += 1
        self._check()

    def on_hello(self, s: Stream) -> None:
        self.hellos += 1
        self._check()

    def on_failed(self, s: Stream) -> None:
        self.failed += 1

    def on_lost(self, s: Stream) -> None:
        if not self.closing:
            self.lost += 1

    def on_done(self, s: Stream, t: float) -> None:
        self.reached += 1
        self.last_done = t
        self._check()

    async def _wait(self, counter: str, want: int, timeout: float) -> bool:
        self.counter, self.want = counter, want
        self.waiter = asyncio.Event()
        self._check()
        try:
            await asyncio.wait_for(self.waiter.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiter = None

    def request(self, path: str, headers: dict) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def connect(self, n, path, headers, per_second, ready, timeout) -> dict:
        loop = asyncio.get_running_loop()
        req = self.request(path, {"Accept": "text/event-stream", **headers})
        t0 = time.monotonic()
        errors = 0
        base_made, base_hello = self.made, self.hellos
        sem = asyncio.Semaphore(256)

        async def one():
            nonlocal errors
            async with sem:
                s = Stream(self, req)
                try:
                    await loop.create_connection(lambda: s, self.host, self.port)
                    self.streams.append(s)
                except OSError:
                    errors += 1

        tasks = []
        for i in range(n):
            if per_second:
                delay = t0 + i / per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        ok = True
        if ready == "hello":
            ok = await self._wait("hellos", base_hello + n - errors, timeout)
        return {
            "connected": self.made - base_made,
            "hellos": self.hellos - base_hello,
            "errors": errors,
            "failed": self.failed,
            "ready": ok,
            "seconds": time.monotonic() - t0,
        }

    async def reach(self, target: int, timeout: float) -> dict:
        """Wait until every open stream has received an id >= target."""
        self.target = target
        self.reached = 0
        for s in self.streams:
            s.done = bool(s.ids) and s.ids[-1] >= target
            if s.done:
                self.reached += 1
        want = sum(1 for s in self.streams if s.open or s.done)
        ok = await self._wait("reached", want, timeout)
        return {
            "reached": self.reached,
            "want": want,
            "ok": ok,
            "lastDone": self.last_done,
        }

    def collect(self, since: int) -> list[tuple[bytes, bytes]]:
        out = []
        for s in self.streams:
            ids, times = s.ids, s.times
            k = 0
            while k < len(ids) and ids[k] <= since:
                k += 1
            out.append((ids[k:].tobytes(), times[k:].tobytes()))
            s.ids = array("q")
            s.times = array("d")
        return out

    async def close(self) -> dict:
        self.closing = True
        for s in self.streams:
            if s.tr is not None:
                s.tr.close()
        await asyncio.sleep(0.2)
        n = len(self.streams)
        self.streams = []
        self.made = self.hellos = self.failed = self.lost = 0
        self.closing = False
        self.target = 1 << 62
        return {"closed": n}


def _child(conn, host: str, port: int) -> None:
    env.raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main():
        fleet = Fleet(host, port)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        fd = conn.fileno()

        def blocking(fn, *a):
            # the loop made the pipe non-blocking; a large reply must not fail half-written
            os.set_blocking(fd, True)
            try:
                return fn(*a)
            finally:
                os.set_blocking(fd, False)

        loop.add_reader(fd, lambda: inbox.put_nowait(blocking(conn.recv)))
        blocking(conn.send, ("ready", os.getpid()))
        while True:
            cmd, kw = await inbox.get()
            if cmd == "quit":
                await fleet.close()
                blocking(conn.send, ("ok", None))
                return
            if cmd == "connect":
                res = await fleet.connect(**kw)
            elif cmd == "reach":
                res = await fleet.reach(**kw)
            elif cmd == "collect":
                res = fleet.collect(**kw)
            elif cmd == "close":
                res = await fleet.close()
            elif cmd == "stats":
                res = {
                    "open": sum(1 for s in fleet.streams if s.open),
                    "lost": fleet.lost,
                    "failed": fleet.failed,
                }
            else:
                res = {"error": f"unknown command {cmd}"}
            blocking(conn.send, ("ok", res))

    asyncio.run(main())


class Clients:
    """A pool of generator processes; each command goes to all of them and waits for all."""

    def __init__(self, host: str, port: int, procs: int = 1):
        ctx = mp.get_context("spawn")
        self.conns = []
        self.procs = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_child, args=(child, host, port), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        self.pids = [c.recv()[1] for c in self.conns]

    def _all(self, cmd: str, kws: list[dict]) -> list:
        for c, kw in zip(self.conns, kws, strict=True):
            c.send((cmd, kw))
        out = []
        for c in self.conns:
            status, res = c.recv()
            out.append(res)
        return out

    def _split(self, n: int) -> list[int]:
        k = len(self.conns)
        return [n // k + (1 if i < n % k else 0) for i in range(k)]

    def connect(
        self,
        n: int,
        path: str,
        headers: dict,
        *,
        per_second: float = 1000,
        ready: str = "hello",
        timeout: float = 120,
    ) -> dict:
        parts = self._split(n)
        res = self._all(
            "connect",
            [
                {
                    "n": m,
                    "path": path,
                    "headers": headers,
                    "per_second": per_second / len(parts) if per_second else 0,
                    "ready": ready,
                    "timeout": timeout,
                }
                for m in parts
            ],
        )
        return {
            "connected": sum(r["connected"] for r in res),
            "hellos": sum(r["hellos"] for r in res),
            "errors": sum(r["errors"] for r in res),
            "failed": sum(r["failed"] for r in res),
            "ready": all(r["ready"] for r in res),
            "seconds": max(r["seconds"] for r in res),
        }

    def reach(self, target: int, timeout: float = 60) -> dict:
        res = self._all("reach", [{"target": target, "timeout": timeout}] * len(self.conns))
        return {
            "reached": sum(r["reached"] for r in res),
            "want": sum(r["want"] for r in res),
            "ok": all(r["ok"] for r in res),
            "lastDone": max(r["lastDone"] for r in res),
        }

    def collect(self, since: int = 0) -> list[tuple[array, array]]:
        out = []
        for part in self._all("collect", [{"since": since}] * len(self.conns)):
            for ids_b, times_b in part:
                ids, times = array("q"), array("d")
                ids.frombytes(ids_b)
                times.frombytes(times_b)
                out.append((ids, times))
        return out

    def stats(self) -> dict:
        res = self._all("stats", [{}] * len(self.conns))
        return {k: sum(r[k] for r in res) for k in res[0]}

    def close_streams(self) -> None:
        self._all("close", [{}] * len(self.conns))

    def stop(self) -> None:
        try:
            self._all("quit", [{}] * len(self.conns))
        except (OSError, EOFError):
            pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

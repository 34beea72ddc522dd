"""Group commit: the changes of requests that arrive together, written in one transaction.

Under load a worker holds several requests that each want the same thing: a lock, two round
trips to the database and a commit, one after the other. Here the first request to arrive
leads: it takes every change waiting (up to `limit`, one per key) and runs them with `run` in
a transaction of its own; the requests that arrived meanwhile wait for it, and when it is done
the first still waiting leads the next group. A request alone is a group of one and waits for
nothing, so this adds no delay: a group is whatever arrived while the one before was written.

Changes with the same key (the same product) never share a group: the second waits for the
next one and sees what the first wrote, as if they had run one after the other.

`threading` primitives, so it works in threads and, monkey-patched, in gevent's greenlets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from app.errors import ServiceUnavailable


class LeaderLost(ServiceUnavailable):
    """The request writing a change's group was stopped before it finished (a worker's
    graceful timeout kills its greenlets): whether the change was written is not known here."""


class _Waiter:
    __slots__ = ("key", "change", "wake", "lead", "done", "result", "error")

    def __init__(self, key: Hashable, change: Any):
        self.key, self.change = key, change
        self.wake = threading.Event()
        self.lead = self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """`submit(key, change)` returns what `run` gave for `change`, or raises what it gave.

    `run(changes)` gets a list of changes and returns one result per change, in order: a value,
    or an exception to raise in that change's request. If `run` itself raises, every change of
    the group gets that exception. `after()`, if given, runs in the leader once the next group
    may start (the publishing of what the group committed, say).
    """

    def __init__(
        self,
        run: Callable[[list], list],
        *,
        after: Callable[[], None] | None = None,
        limit: int = 32,
    ):
        self._run = run
        self._after = after
        self._limit = limit
        self._mutex = threading.Lock()
        self._queue: list[_Waiter] = []
        self._leading = False

    def submit(self, key: Hashable, change: Any) -> Any:
        waiter = _Waiter(key, change)
        with self._mutex:
            self._queue.append(waiter)
            if not self._leading:
                self._leading = waiter.lead = True
        try:
            if not waiter.lead:
                waiter.wake.wait()  # set when its change is done, or when it is to lead
            if not waiter.done:  # it leads: its change is first in the queue
                self._lead()
        except BaseException:  # killed while it waited
            self._abandon(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _lead(self) -> None:
        with self._mutex:
            group, keys, rest = [], set(), []
            for waiter in self._queue:
                if waiter.key in keys or len(group) >= self._limit:
                    rest.append(waiter)
                else:
                    group.append(waiter)
                    keys.add(waiter.key)
            self._queue = rest
        leader = group[0]
        try:
            results = self._run([w.change for w in group])
            if len(results) != len(group):  # pragma: no cover - a bug in `run`
                raise RuntimeError(f"{len(results)} results for {len(group)} changes")
        except BaseException as err:
            # The leader's own request raises what stopped it; a follower gets an Exception
            # in any case (a request cannot answer a GreenletExit).
            lost = err if isinstance(err, Exception) else LeaderLost(_LOST)
            results = [err, *[lost] * (len(group) - 1)]
            raise
        finally:
            for waiter, result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    waiter.error = result
                else:
                    waiter.result = result
                waiter.done = True
                waiter.wake.set()
            with self._mutex:
                leader.lead = False
                self._hand_over()
        if self._after is not None:
            self._after()

    def _abandon(self, waiter: _Waiter) -> None:
        with self._mutex:
            if waiter in self._queue:
                self._queue.remove(waiter)
            if waiter.lead:
                waiter.lead = False
                self._hand_over()

    def _hand_over(self) -> None:
        """(Under the mutex.) The first waiting request leads next, if there is one."""
        if self._queue:
            following = self._queue[0]
            following.lead = True
            following.wake.set()
        else:
            self._leading = False


_LOST = "The request writing this change was stopped; check whether it was made, then retry."

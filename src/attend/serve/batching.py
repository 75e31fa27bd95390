"""Server-side micro-batching: concurrent requests share one forward pass.

Each request's texts join a queue. A single worker thread takes the first waiting request, then
keeps adding requests until the batch holds ``max_batch`` texts or ``max_wait_ms`` has passed
since that first request arrived, runs the model once on all of them, and hands every request
its own rows. ``max_batch=1`` (or ``max_wait_ms=0`` with no other request waiting) serves each
request alone. A request with more texts than ``max_batch`` is split.

The worker thread forms its batches itself, from a thread-safe queue, so the model starts on
the next batch the moment the last one ends: the event loop (parsing requests, writing
responses) is never on that path. With the batches formed on the event loop instead, the model
sat idle 22% of the time waiting for the loop to hand it the next request (py-spy, MiniLM in
bf16, one request at a time). Each result goes back with ``call_soon_threadsafe`` to the event
loop its request's future belongs to: requests from several loops (a server's, a test client's)
may share a batch, and a future resolved from another loop's thread wakes nobody.

One worker means the model never runs two batches at once: on a CPU that is what you want
(PyTorch already uses every core within one batch). When a batch fails, each of its requests is
run again alone, so only the request at fault gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatcherStopped", "MicroBatcher"]


#: How often a request waiting on its batch asks whether its client is still there.
WATCH_SECONDS = 0.25


class BatcherStopped(RuntimeError):
    """The batcher takes no more requests (the service is shutting down): a 503, not a fault.

    A class of its own: the routes had caught ``RuntimeError`` for it, which is also what PyTorch
    raises for a failing model (out of memory, a shape error), so such a fault was answered as
    "unavailable" with the exception's words, which may quote the request's text, and not logged.
    """


@dataclass
class _Request:
    """One caller's request: waiting (for :meth:`MicroBatcher.queued`) until each of its parts has started."""

    parts: int


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[Any]]
    request: _Request
    arrived: float = field(default_factory=time.perf_counter)
    started: bool = False


def _resolve(pending: list[_Pending], results: Sequence[Any] | None, error: BaseException | None) -> None:
    """From the worker thread: hand each request its rows (or the batch's error) on its own loop."""
    offset = 0
    for p in pending:
        rows = None if results is None else list(results[offset : offset + len(p.texts)])
        try:
            p.future.get_loop().call_soon_threadsafe(_settle, p.future, rows, error)
        except RuntimeError:  # that loop is closed: its caller has gone, and the batcher lives on
            pass
        offset += len(p.texts)


def _settle(future: asyncio.Future[list[Any]], rows: list[Any] | None, error: BaseException | None) -> None:
    """On the future's loop: set its result or exception, unless the caller gave up (cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert rows is not None
        future.set_result(rows)


class MicroBatcher:
    """Collects texts from concurrent callers into batches for ``run``.

    Args:
        run: Maps a list of texts to a list of results, one per text (runs in the worker thread).
        max_batch: Most texts per call of ``run``.
        max_wait_ms: Longest a request waits for others to join its batch.
        on_batch: Called with ``(texts in batch, seconds run took)`` after each batch (metrics;
            from the worker thread).
    """

    def __init__(
        self,
        run: Callable[[list[str]], Sequence[Any]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={max_wait_ms} must be >= 0")
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._jobs: queue.Queue[_Pending | None] = queue.Queue()
        self._waiting = 0  # requests with a part not started yet
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._draining = False

    @property
    def running(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    def queued(self) -> int:
        """Requests waiting for a batch: with a part not started yet, one held while its batch fills
        among them (the queue's length had counted parts of at most ``max_batch`` texts, 1,845 for 30
        requests, and none of a batch filling)."""
        return self._waiting

    def _start(self, pending: _Pending) -> None:
        """``pending`` runs now (or never: its caller went away): its request waits no more once it was its last."""
        if pending.started:  # run again alone after its batch failed
            return
        pending.started = True
        with self._lock:
            pending.request.parts -= 1
            if pending.request.parts == 0:
                self._waiting -= 1

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="attend-batch", daemon=True)
        self._accepting = True
        self._thread.start()

    def drain(self) -> None:
        """Shutdown has begun: no request will join a waiting batch, so run it now rather than after
        ``max_wait_ms``. Sets a flag only, so a signal handler may call it."""
        self._draining = True

    async def stop(self) -> None:
        """Finish every queued request, then stop."""
        if self._thread is None:
            return
        self._accepting = False
        self._jobs.put(None)  # after every accepted request: the queue is FIFO
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def submit(self, texts: list[str], *, gone: Callable[[], Awaitable[bool]] | None = None
                     ) -> list[Any] | None:  # fmt: skip
        """Results for ``texts``, in order; requests over ``max_batch`` texts are split.

        ``gone``: asked every :data:`WATCH_SECONDS` while the results are awaited (a quick request is
        never asked); once it says the caller went away, the parts not started are dropped and None
        is returned. Requests whose clients had timed out were run, and counted as answered."""
        if not self.running:
            raise BatcherStopped("the batcher is not running")
        if not texts:  # no part to run: nothing waits (counted, it had waited for good)
            return []
        loop = asyncio.get_running_loop()
        futures = []
        chunks = [texts[i : i + self.max_batch] for i in range(0, len(texts), self.max_batch)]
        request = _Request(parts=len(chunks))
        with self._lock:
            self._waiting += 1
        for chunk in chunks:
            pending = _Pending(chunk, loop.create_future(), request)
            self._jobs.put(pending)
            futures.append(pending.future)
        # Every part is awaited, a failed one too: awaited in turn, the parts after a failure went
        # unread ("Future exception was never retrieved" in the log).
        gathered = asyncio.gather(*futures, return_exceptions=True)
        try:
            while gone is not None and not (await asyncio.wait({gathered}, timeout=WATCH_SECONDS))[0]:
                if await gone():
                    gathered.cancel()  # and with it every part: the worker skips those not started
                    with contextlib.suppress(asyncio.CancelledError):
                        await gathered
                    return None
        except BaseException:  # cancelled while watching (the shutdown grace ended): its parts go too, as an
            gathered.cancel()  # awaited gather's would (asyncio.wait cancels nothing it waits on)
            raise
        parts = await gathered
        results: list[Any] = []
        for part in parts:
            if isinstance(part, BaseException):
                raise part
            results.extend(part)
        return results

    def _take(self, timeout: float) -> _Pending | bool | None:
        """The next queued item within ``timeout`` seconds (none: only what is queued now); False if none."""
        try:
            return self._jobs.get(timeout=timeout) if timeout > 0 else self._jobs.get_nowait()
        except queue.Empty:
            return False

    def _next(self, since: float) -> _Pending | bool | None:
        """The next queued item while a batch begun at ``since`` may still wait for one (False once it
        may not). The wait is taken in slices of at most 50 ms, so that :meth:`drain` ends it."""
        while True:
            left = 0.0 if self._draining else self.max_wait - (time.perf_counter() - since)
            item = self._take(min(left, 0.05))
            if item is not False or left <= 0.05:
                return item

    def _work(self) -> None:
        carry: _Pending | None = None
        stopping = False
        while not stopping:
            first = carry if carry is not None else self._jobs.get()
            carry = None
            if first is None:
                break
            batch, size = [first], len(first.texts)
            while size < self.max_batch:
                item = self._next(first.arrived)
                if item is False:
                    break
                if item is None:
                    stopping = True
                    break
                assert isinstance(item, _Pending)
                if size + len(item.texts) > self.max_batch:
                    carry = item  # starts the next batch
                    break
                batch.append(item)
                size += len(item.texts)
            self._execute(batch)
        # stop() was called: finish what was accepted after all (a carried item, a late submit).
        rest = [carry] if carry is not None else []
        while (item := self._take(0)) is not False:
            if isinstance(item, _Pending):
                rest.append(item)
        for item in rest:
            self._execute([item])

    def _execute(self, batch: list[_Pending]) -> None:
        for pending in batch:
            self._start(pending)
        batch = [pending for pending in batch if not pending.future.cancelled()]  # callers that went away
        if not batch:
            return
        texts = [t for p in batch for t in p.texts]
        start = time.perf_counter()
        try:
            results = self.run(texts)
        except Exception as exc:
            if len(batch) == 1:
                _resolve(batch, None, exc)  # the batcher lives on
                return
        else:
            if self.on_batch is not None:
                self.on_batch(len(texts), time.perf_counter() - start)
            _resolve(batch, results, None)
            return
        # One request's fault must not fail its neighbours: each is run again alone, outside the except
        # block (each request's own error had been chained to the batch's, and one client's log entry
        # showed another's exception and text as its cause).
        for pending in batch:
            self._execute([pending])

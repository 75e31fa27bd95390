"""Server-side micro-batching: concurrent requests share one forward pass.

Each request's texts join a queue. A single consumer takes the first waiting request, then keeps
adding requests until the batch holds ``max_batch`` texts or ``max_wait_ms`` has passed since
that first request arrived, runs the model once on all of them in a worker thread, and hands
every request its own rows. ``max_batch=1`` (or ``max_wait_ms=0`` with no other request
waiting) serves each request alone. A request with more texts than ``max_batch`` is split.

One consumer and one worker thread mean the model never runs two batches at once: on a CPU
that is what you want (PyTorch already uses every core within one batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MicroBatcher"]


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[Any]]
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Collects texts from concurrent callers into batches for ``run``.

    Args:
        run: Maps a list of texts to a list of results, one per text (runs in a worker thread).
        max_batch: Most texts per call of ``run``.
        max_wait_ms: Longest a request waits for others to join its batch.
        on_batch: Called with ``(texts in batch, seconds run took)`` after each batch (metrics).
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
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attend-batch")
        self._carry: _Pending | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._consume(), name="attend-micro-batcher")

    async def stop(self) -> None:
        """Finish every queued request, then stop."""
        if self._queue is not None and self._task is not None:
            await self._queue.put(None)
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list[Any]:
        """Results for ``texts``, in order; requests over ``max_batch`` texts are split."""
        if not self.running or self._queue is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        parts = [texts[i : i + self.max_batch] for i in range(0, len(texts), self.max_batch)]
        futures = []
        for part in parts:
            pending = _Pending(part, loop.create_future())
            await self._queue.put(pending)
            futures.append(pending.future)
        results: list[Any] = []
        for future in futures:
            results.extend(await future)
        return results

    async def _next(self, timeout: float | None) -> _Pending | bool | None:
        """The next queued item; ``False`` on timeout."""
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            if timeout is None:
                return await self._queue.get()
            return await asyncio.wait_for(self._queue.get(), timeout=max(timeout, 0.0))
        except TimeoutError:
            return False

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is None or first is False:
                break
            batch = [first]
            size = len(first.texts)
            while size < self.max_batch:
                remaining = self.max_wait - (time.perf_counter() - first.arrived)
                if remaining <= 0 and self._queue is not None and self._queue.empty():
                    break
                item = await self._next(remaining)
                if item is False:
                    break
                if item is None:
                    stopping = True
                    break
                if size + len(item.texts) > self.max_batch:
                    self._carry = item  # starts the next batch
                    break
                batch.append(item)
                size += len(item.texts)
            await self._execute(loop, batch)
        # Drain whatever is still queued (stop() was called): nothing accepted is dropped.
        while self._carry is not None or (self._queue is not None and not self._queue.empty()):
            item = await self._next(0)
            if isinstance(item, _Pending):
                await self._execute(loop, [item])

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.run, texts)
        except Exception as exc:  # every waiting request gets the error, the batcher lives on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), time.perf_counter() - start)
        offset = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result(list(results[offset : offset + len(p.texts)]))
            offset += len(p.texts)

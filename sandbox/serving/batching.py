"""Adaptive micro-batching, as KServe's batcher does it.

Concurrent requests are queued; one worker takes what is waiting (up to
`max_batch_size` rows), waits at most `max_wait` for more, and hands the whole
group to `run_batch` in a thread, which answers each request with its own
result (or its own exception). While a batch runs, new requests gather for the
next one, so under load batches grow by themselves and at low load nobody waits
long. `run_batch` is where stacking happens: the batcher knows nothing of rows
beyond their count.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
# Given the waiting items, one result per item: a value, or the exception that item raises.
RunBatch = Callable[[Sequence[Any]], Sequence[Any]]

_Entry = tuple[Any, int, asyncio.Future]


class MicroBatcher(Generic[Item]):
    def __init__(self, run_batch: RunBatch, *, max_batch_size: int, max_wait: float):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._queue: asyncio.Queue[_Entry] | None = None
        self._worker: asyncio.Task | None = None
        # One thread: predict calls never overlap, so a batch gets the whole core.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.batches = 0
        self.rows = 0

    async def submit(self, item: Item, rows: int = 1) -> Any:
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run())
        future = loop.create_future()
        self._queue.put_nowait((item, rows, future))
        return await future

    async def _collect(self) -> list[_Entry]:
        assert self._queue is not None
        first = await self._queue.get()
        batch, size = [first], first[1]
        if self.max_batch_size == 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            if not self._queue.empty():
                entry = self._queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    entry = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(entry)
            size += entry[1]
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            items = [item for item, _, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                results = [exc] * len(batch)
            self.batches += 1
            self.rows += sum(rows for _, rows, _ in batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

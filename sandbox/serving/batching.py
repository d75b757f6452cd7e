"""Adaptive micro-batching, as KServe's batcher does it.

Concurrent requests are queued; one worker takes what is waiting (up to
`max_batch_size` rows), waits at most `max_wait` for more, runs a single
`predict` on the stacked rows in a thread, and answers each request with its
own slice. While a `predict` runs, new requests gather for the next batch, so
under load batches grow by themselves and at low load nobody waits long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]


class MicroBatcher:
    def __init__(self, predict: PredictFn, *, max_batch_size: int, max_wait: float):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        # One thread: predict calls never overlap, so a batch gets the whole core.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.batches = 0
        self.rows = 0

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        assert self._queue is not None
        first = await self._queue.get()
        batch, size = [first], len(first[0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            if not self._queue.empty():
                item = self._queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            stacked = np.concatenate([rows for rows, _ in batch]) if len(batch) > 1 else batch[0][0]
            try:
                predictions = await loop.run_in_executor(self._executor, self._predict, stacked)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(stacked)
            offset = 0
            for rows, future in batch:
                if not future.done():
                    future.set_result(predictions[offset : offset + len(rows)])
                offset += len(rows)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

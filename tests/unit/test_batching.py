import asyncio

import pytest

from sandbox.serving.batching import MicroBatcher


def _run(batcher_factory, submissions):
    async def scenario():
        batcher = batcher_factory()
        try:
            pending = (batcher.submit(item, rows) for item, rows in submissions)
            return await asyncio.gather(*pending, return_exceptions=True)
        finally:
            batcher.close()

    return asyncio.run(scenario())


def test_concurrent_requests_share_one_run_and_get_their_own_results():
    groups = []

    def run_batch(items):
        groups.append(len(items))
        return [item * 10 for item in items]

    results = _run(lambda: MicroBatcher(run_batch, max_batch_size=64, max_wait=0.05), [(i, 1) for i in range(20)])
    assert results == [i * 10 for i in range(20)]
    assert sum(groups) == 20
    assert len(groups) < 20  # batched, not one run per request


def test_batches_never_exceed_the_maximum_number_of_rows():
    sizes = []

    def run_batch(items):
        sizes.append(sum(rows for _, rows in items))
        return [None] * len(items)

    # Each item carries its row count, as the model server's inputs do.
    _run(lambda: MicroBatcher(run_batch, max_batch_size=4, max_wait=0.05), [((i, 2), 2) for i in range(10)])
    assert max(sizes) <= 4 and sum(sizes) == 20


def test_each_request_gets_its_own_exception_and_the_batcher_goes_on():
    def run_batch(items):
        return [ValueError(f"bad {item}") if item < 0 else item for item in items]

    results = _run(lambda: MicroBatcher(run_batch, max_batch_size=8, max_wait=0.01), [(1, 1), (-2, 1), (3, 1)])
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"


def test_a_run_that_raises_fails_its_batch_only():
    state = {"fail": True}

    def run_batch(items):
        if state["fail"]:
            state["fail"] = False
            raise RuntimeError("model exploded")
        return list(items)

    async def scenario():
        batcher = MicroBatcher(run_batch, max_batch_size=8, max_wait=0.01)
        first = await asyncio.gather(batcher.submit(1), return_exceptions=True)
        after = await batcher.submit(7)
        batcher.close()
        return first, after

    first, after = asyncio.run(scenario())
    assert isinstance(first[0], RuntimeError)
    assert after == 7


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_batch_size=0, max_wait=0)


# ---------------------------------------------------------------- waiting, on a virtual clock


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing is ready to run.

    `max_wait` is then measured exactly, in virtual seconds, and no test sleeps: a wait of an
    hour passes at once. Real I/O (the batcher's worker thread handing back results) still wakes
    the loop as usual.
    """

    def __init__(self):
        super().__init__()
        self.now = 0.0
        real_select = self._selector.select

        def select(timeout=None):
            if timeout is None or timeout <= 0:
                return real_select(timeout)
            events = real_select(0)
            if not events:
                self.now += timeout  # idle until the next timer: skip straight to it
            return events

        self._selector.select = select

    def time(self) -> float:
        return self.now


def _on_virtual_clock(scenario):
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(scenario())


HOUR = 3600.0


def _recording_batcher(runs: list, **options) -> MicroBatcher:
    """A batcher whose run_batch records (virtual time, items) for each batch it runs."""
    loop = asyncio.get_running_loop()

    def run_batch(items):
        runs.append((loop.time(), list(items)))
        return list(items)

    return MicroBatcher(run_batch, **options)


def test_a_lone_request_waits_max_wait_for_company_and_no_longer():
    runs = []

    async def scenario():
        batcher = _recording_batcher(runs, max_batch_size=64, max_wait=HOUR)
        try:
            return await asyncio.wait_for(batcher.submit("a"), 2 * HOUR)  # an answer, not a wait past max_wait
        finally:
            batcher.close()

    assert _on_virtual_clock(scenario) == "a"
    assert runs == [(HOUR, ["a"])]


def test_a_request_within_max_wait_joins_the_batch_and_a_later_one_waits_for_the_next():
    runs = []

    async def scenario():
        batcher = _recording_batcher(runs, max_batch_size=64, max_wait=HOUR)

        async def submit_at(when, item):
            await asyncio.sleep(when)
            return await batcher.submit(item)

        try:
            return await asyncio.gather(submit_at(0, "a"), submit_at(HOUR / 2, "b"), submit_at(1.5 * HOUR, "c"))
        finally:
            batcher.close()

    assert _on_virtual_clock(scenario) == ["a", "b", "c"]
    # "b" came within a's hour and rode along; "c" came after that batch left and waited its own hour.
    assert runs == [(HOUR, ["a", "b"]), (2.5 * HOUR, ["c"])]


def test_a_full_batch_runs_at_once_without_waiting():
    runs = []

    async def scenario():
        batcher = _recording_batcher(runs, max_batch_size=4, max_wait=HOUR)
        try:
            return await asyncio.gather(*(batcher.submit(n) for n in range(6)))
        finally:
            batcher.close()

    assert _on_virtual_clock(scenario) == list(range(6))
    assert runs == [(0.0, [0, 1, 2, 3]), (HOUR, [4, 5])]  # four rows fill it; the rest wait for company


def test_batch_size_one_never_waits():
    runs = []

    async def scenario():
        batcher = _recording_batcher(runs, max_batch_size=1, max_wait=HOUR)
        try:
            return await asyncio.gather(*(batcher.submit(n) for n in range(3)))
        finally:
            batcher.close()

    assert _on_virtual_clock(scenario) == [0, 1, 2]
    assert runs == [(0.0, [0]), (0.0, [1]), (0.0, [2])]

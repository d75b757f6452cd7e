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


def test_batch_size_one_never_groups():
    groups = []

    def run_batch(items):
        groups.append(len(items))
        return list(items)

    _run(lambda: MicroBatcher(run_batch, max_batch_size=1, max_wait=1.0), [(i, 1) for i in range(5)])
    assert groups == [1] * 5


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

import asyncio

import numpy as np
import pytest

from sandbox.serving.batching import MicroBatcher


def test_concurrent_requests_share_one_predict_and_get_their_own_rows():
    calls = []

    def predict(rows):
        calls.append(len(rows))
        return rows[:, 0] * 10

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=64, max_wait=0.05)
        requests = [np.array([[float(i), 0.0]]) for i in range(20)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [r.tolist() for r in results] == [[i * 10.0] for i in range(20)]
    assert sum(calls) == 20
    assert len(calls) < 20  # batched, not one predict per request


def test_batches_never_exceed_the_maximum():
    calls = []

    def predict(rows):
        calls.append(len(rows))
        return rows[:, 0]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=4, max_wait=0.05)
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(10)))
        batcher.close()

    asyncio.run(scenario())
    assert max(calls) <= 4 and sum(calls) == 10


def test_a_lone_request_waits_no_longer_than_max_wait():
    async def scenario():
        batcher = MicroBatcher(lambda rows: rows[:, 0], max_batch_size=64, max_wait=0.02)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(np.ones((1, 1)))
        batcher.close()
        return loop.time() - started

    assert asyncio.run(scenario()) < 0.5


def test_a_failing_predict_fails_every_request_in_the_batch_and_the_batcher_goes_on():
    state = {"fail": True}

    def predict(rows):
        if state["fail"]:
            raise RuntimeError("model exploded")
        return rows[:, 0]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=8, max_wait=0.01)
        outcomes = await asyncio.gather(*(batcher.submit(np.ones((1, 1))) for _ in range(3)), return_exceptions=True)
        state["fail"] = False
        after = await batcher.submit(np.full((1, 1), 7.0))
        batcher.close()
        return outcomes, after

    outcomes, after = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert after.tolist() == [7.0]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(lambda rows: rows, max_batch_size=0, max_wait=0)

"""Dynamic batching: requests queued together share a forward pass, each gets its own rows
back, and with two passes one batch computes while the next is gathered and computed."""

import asyncio
import threading

import numpy as np

from tasks.serve import DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_queued_requests_share_a_pass_and_each_gets_its_own_rows():
    sizes = []

    def infer(x):
        sizes.append(len(x))
        return x.reshape(len(x), -1).astype(float), "model"

    async def main():
        batcher = DynamicBatcher(infer, max_batch=64, max_wait_s=0.05)
        xs = [np.full((k, 1, 2, 2), i, np.uint8) for i, k in enumerate([1, 3, 2, 1, 5])]
        answers = await asyncio.gather(*(batcher(x) for x in xs))
        await batcher.close()
        return xs, answers

    xs, answers = run(main())
    for x, (proba, model) in zip(xs, answers, strict=True):
        assert model == "model" and proba.shape == (len(x), 4) and (proba == x[0, 0, 0, 0]).all()
    assert sum(sizes) == 12 and len(sizes) < 5  # fewer passes than requests


def test_two_passes_compute_at_once():
    both = threading.Barrier(2, timeout=10)  # one pass at a time would time out here

    def infer(x):
        both.wait()
        return np.zeros((len(x), 2)), "model"

    async def main():
        batcher = DynamicBatcher(infer, max_batch=1, max_wait_s=0.0, passes=2)
        answers = await asyncio.gather(*(batcher(np.zeros((1, 1, 2, 2), np.uint8)) for _ in range(4)))
        await batcher.close()
        return answers

    assert [a[0].shape for a in run(main())] == [(1, 2)] * 4


def test_a_failing_pass_fails_its_requests_and_the_next_ones_are_answered():
    calls = []

    def infer(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return np.ones((len(x), 2)), "model"

    async def main():
        batcher = DynamicBatcher(infer, max_batch=1, max_wait_s=0.0, passes=1)
        first = await asyncio.gather(batcher(np.zeros((1, 1, 2, 2), np.uint8)), return_exceptions=True)
        second = await batcher(np.zeros((1, 1, 2, 2), np.uint8))
        await batcher.close()
        return first[0], second

    error, (proba, _) = run(main())
    assert isinstance(error, RuntimeError) and proba.shape == (1, 2)

"""Dynamic batching: concurrent requests share one forward pass. A batch takes every request
queued while the previous ones computed, and under load waits at most max_wait for more; a
batch holds at most max_batch images (a request is never split); up to `passes` batches compute
at once, each in a worker thread (onnxruntime releases the GIL), so the event loop keeps
queueing while they compute, and each batch is answered by one model version whole."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pending:
    x: np.ndarray  # uint8 (k, C, H, W)
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class DynamicBatcher:
    """`await batcher(x)` -> (probabilities (k, classes), what computed them).

    `infer(x)` returns (probabilities, the model that computed them) for a whole batch;
    `observe(size)` is told each batch's size (for metrics)."""

    def __init__(self, infer: Callable[[np.ndarray], tuple[np.ndarray, object]], max_batch: int,
                 max_wait_s: float, observe: Callable[[int], None] = lambda n: None, passes: int = 1):
        self.infer, self.max_batch, self.max_wait_s, self.observe = infer, max_batch, max_wait_s, observe
        self.passes = passes  # forward passes computing at once, each in its own worker thread
        self.queue: asyncio.Queue[Pending] | None = None
        self.free: asyncio.Semaphore | None = None
        self.carry: Pending | None = None
        self.worker = ThreadPoolExecutor(passes, thread_name_prefix="evergreen-infer")
        self.task: asyncio.Task | None = None
        self.computing: set[asyncio.Task] = set()

    async def __call__(self, x: np.ndarray) -> tuple[np.ndarray, object]:
        if self.task is None:
            self.queue, self.free = asyncio.Queue(), asyncio.Semaphore(self.passes)
            self.task = asyncio.get_running_loop().create_task(self.run())
        item = Pending(x)
        await self.queue.put(item)
        return await item.done

    async def run(self) -> None:
        """Gather a batch as soon as a pass is free (requests queue meanwhile), compute it."""
        while True:
            await self.free.acquire()
            task = asyncio.get_running_loop().create_task(self.compute(await self.gather()))
            self.computing.add(task)
            task.add_done_callback(self.computing.discard)

    async def compute(self, batch: list[Pending]) -> None:
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
            self.observe(len(x))
            proba, model = await asyncio.get_running_loop().run_in_executor(self.worker, self.infer, x)
        except Exception as exc:  # every waiter learns, the loop goes on
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        finally:
            self.free.release()
        at = 0
        for p in batch:
            if not p.done.done():  # a client that went away cancelled its future
                p.done.set_result((proba[at:at + len(p.x)], model))
            at += len(p.x)

    async def gather(self) -> list[Pending]:
        """The next batch: the first request and every one queued meanwhile; under load (others
        were queued) it waits up to max_wait for more, idle it starts at once (no added latency
        for a lone client)."""
        loop = asyncio.get_running_loop()
        first, self.carry = (self.carry, None) if self.carry else (await self.queue.get(), None)
        batch, n = [first], len(first.x)
        busy = not self.queue.empty()
        deadline = loop.time() + self.max_wait_s
        while n < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if not busy or left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            if n + len(item.x) > self.max_batch:
                self.carry = item  # first in the next batch
                break
            batch.append(item)
            n += len(item.x)
        return batch

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for task in list(self.computing):
            task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

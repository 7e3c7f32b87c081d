"""Batching across requests: the sentences of concurrent requests merged into one decoder call (serve.py).

A request's sentences wait in one queue, as the ids serve.py encoded them; a
call takes the oldest and every later one with the same decoding settings, as
many as fit max_batch_tokens (sentences x the longest, padding included),
after waiting at most max_wait seconds for more to come. Calls run one at a
time in a thread of their own, off the event loop; the queue holds at most
max_queue sentences (QueueFull).
"""
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import time


@dataclasses.dataclass
class Job:
    key: tuple  # the decoding settings (beam_size, nbest, length_penalty): one decoder call shares them
    ids: list  # the sentence's ids, ending in </S>
    future: asyncio.Future
    since: float

    @property
    def length(self):
        return len(self.ids)


class QueueFull(Exception):
    pass


class Batcher:
    """Merges the sentences of concurrent requests into engine calls: one call takes the oldest sentence
    and every later one with its settings, up to max_batch_tokens (n x the longest), after waiting at most
    max_wait seconds for them; calls run one at a time in a thread of their own.

    engine_for(key): the engine (engine.Engine) that translates with those settings; its translate_ids()
    is called with the jobs' ids. on_call(jobs, now), if given, is told of each call as it begins (metrics)."""

    def __init__(self, engine_for, max_batch_tokens, max_wait, max_queue, on_call=None):
        self.engine_for, self.max_batch_tokens, self.max_wait, self.max_queue = (engine_for, max_batch_tokens,
                                                                                 max_wait, max_queue)
        self.on_call = on_call
        self.jobs, self.arrived = collections.deque(), asyncio.Event()
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
        self.calls = 0

    def submit(self, key, rows):
        """Queues the sentences of one request, as id rows ending in </S>; their futures give (translation,
        score) lists."""
        if len(self.jobs) + len(rows) > self.max_queue:
            raise QueueFull()
        loop, now = asyncio.get_running_loop(), time.monotonic()
        jobs = [Job(key, ids, loop.create_future(), now) for ids in rows]
        self.jobs.extend(jobs)
        self.arrived.set()
        return [job.future for job in jobs]

    def _batch(self, key):
        """The oldest jobs of these settings that fit max_batch_tokens together (the first always does)."""
        batch, longest = [], 0
        for job in self.jobs:
            if job.key != key:
                continue
            if batch and (len(batch) + 1) * max(longest, job.length) > self.max_batch_tokens:
                break
            batch.append(job)
            longest = max(longest, job.length)
        return batch

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            while not self.jobs:
                self.arrived.clear()
                await self.arrived.wait()
            first = self.jobs[0]
            while not self._full(first.key) and (left := first.since + self.max_wait - time.monotonic()) > 0:
                self.arrived.clear()  # others may join until the call is full or the first has waited max_wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
            batch = self._batch(first.key)
            chosen = set(map(id, batch))
            self.jobs = collections.deque(job for job in self.jobs if id(job) not in chosen)
            self.calls += 1
            if self.on_call:
                self.on_call(batch, time.monotonic())
            try:
                engine = self.engine_for(first.key)
                results = await loop.run_in_executor(self.thread, engine.translate_ids, [job.ids for job in batch])
            except Exception as e:  # handed to each request, which answers 500; the server goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            for job, result in zip(batch, results):
                if not job.future.done():  # (a client that went away)
                    job.future.set_result(result)

    def _full(self, key):
        """Whether a call of these settings is as large as it may be: one more sentence would not fit."""
        batch = self._batch(key)
        waiting = sum(job.key == key for job in self.jobs)
        return len(batch) < waiting or (len(batch) + 1) * max(job.length for job in batch) > self.max_batch_tokens

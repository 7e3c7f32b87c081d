"""serving/batching.py with a fake engine, in milliseconds: which sentences share a call, in which order, within
--max_batch_tokens; the bounded queue; an engine's failure reaching every request; a client that went away."""
import asyncio

import pytest

from serving.batching import Batcher, QueueFull


class Fake:
    """An engine that records each call's rows and answers each row with its first id as text."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def translate_ids(self, rows):
        self.calls.append([list(row) for row in rows])
        if self.fail:
            raise self.fail
        return [[(str(row[0]), -float(len(row)))] for row in rows]


def serving(test, engines=None, max_batch_tokens=12, max_wait=0.02, max_queue=8):
    """Runs test(batcher, engines) on an event loop with the batcher running; engines: key -> Fake."""
    engines = engines if engines is not None else {}

    async def main():
        batcher = Batcher(lambda key: engines.setdefault(key, Fake()), max_batch_tokens, max_wait, max_queue)
        task = asyncio.create_task(batcher.run())
        try:
            return await asyncio.wait_for(test(batcher, engines), 5)
        finally:
            task.cancel()
            batcher.thread.shutdown(wait=True)

    return asyncio.run(main())


def row(first, length):
    return [first] + [9] * (length - 2) + [3]


A, B = (4, 1, 0.6), (4, 1, 1.0)  # two decoding settings (beam, nbest, length penalty)


def test_concurrent_requests_share_calls_in_arrival_order_within_the_token_budget():
    async def test(batcher, engines):
        first = batcher.submit(A, [row(1, 3), row(2, 3)])
        second = batcher.submit(A, [row(3, 3), row(4, 4)])
        results = await asyncio.gather(*first, *second)
        return results, engines[A].calls

    results, calls = serving(test)
    assert [r[0][0] for r in results] == ["1", "2", "3", "4"]  # each future its own sentence's answer
    # 12 tokens a call: three rows of 3 (9), a fourth of 4 would make 4 x 4 = 16; it waits for the next call
    assert [[r[0] for r in call] for call in calls] == [[1, 2, 3], [4]]


def test_settings_are_never_mixed_in_one_call_and_the_oldest_goes_first():
    async def test(batcher, engines):
        futures = batcher.submit(B, [row(1, 2)]) + batcher.submit(A, [row(2, 2)]) + batcher.submit(B, [row(3, 2)])
        await asyncio.gather(*futures)
        return engines

    engines = serving(test)
    assert [[r[0] for r in call] for call in engines[B].calls] == [[1, 3]]
    assert [[r[0] for r in call] for call in engines[A].calls] == [[2]]


def test_a_sentence_longer_than_the_budget_is_translated_alone():
    async def test(batcher, engines):
        await asyncio.gather(*batcher.submit(A, [row(1, 20), row(2, 2)]))
        return engines[A].calls

    assert [[r[0] for r in call] for call in serving(test)] == [[1], [2]]


def test_the_queue_is_bounded():
    async def test(batcher, engines):
        batcher.submit(A, [row(1, 2)] * 6)
        with pytest.raises(QueueFull):
            batcher.submit(A, [row(2, 2)] * 3)  # 6 + 3 > 8: refused whole
        return len(batcher.jobs)

    assert serving(test) == 6


def test_an_engine_failure_reaches_every_waiting_request_and_the_batcher_goes_on():
    engines = {A: Fake(fail=RuntimeError("out of memory")), B: Fake()}

    async def test(batcher, engines):
        futures = batcher.submit(A, [row(1, 2), row(2, 2)])
        results = await asyncio.gather(*futures, return_exceptions=True)
        later = await asyncio.gather(*batcher.submit(B, [row(5, 2)]))
        return results, later

    results, later = serving(test, engines)
    assert all(isinstance(r, RuntimeError) and str(r) == "out of memory" for r in results)
    assert later == [[("5", -2.0)]]


def test_a_client_that_went_away_does_not_stop_the_others():
    async def test(batcher, engines):
        gone = batcher.submit(A, [row(1, 2)])
        stays = batcher.submit(A, [row(2, 2)])
        gone[0].cancel()  # its request was cancelled (the client disconnected) while it waited
        return await asyncio.gather(*stays), batcher.calls

    results, calls = serving(test)
    assert results == [[("2", -2.0)]] and calls == 1

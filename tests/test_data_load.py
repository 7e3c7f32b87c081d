
import numpy as np
import pytest
from hypothesis import given, strategies as st

import data_load
import vocab
from conftest import random_pairs
from vocab import EOS, PAD, UNK


def test_create_data_filters_by_maxlen_and_pads():
    words = vocab.WordVocab([*vocab.SPECIALS, "a", "b"])
    x, y, src, tgt = data_load.create_data(["a b", "a a a", "b"], ["a", "b", "a zzz b"], words, words, maxlen=3)
    # "a a a" + </S> is 4 ids: dropped; "a zzz b" + </S> is 4 ids: dropped
    assert src == ["a b"] and tgt == ["a"]
    np.testing.assert_array_equal(x, [[4, 5, EOS]])
    np.testing.assert_array_equal(y, [[4, EOS, PAD]])
    x, y, src, _ = data_load.create_data(["a b", "b"], ["a zzz b", "b"], words, words, maxlen=None)
    np.testing.assert_array_equal(x, [[4, 5, EOS], [5, EOS, PAD]])
    np.testing.assert_array_equal(y, [[4, UNK, 5, EOS], [5, EOS, PAD, PAD]])
    assert x.dtype == np.int32


def test_train_batches_are_seeded_full_batches():
    x = np.arange(10, dtype=np.int32).reshape(10, 1)
    batches = lambda seed: [b[0].numpy().ravel().tolist()
                            for b in data_load.train_batches(data_load.array_pairs(x, x)[0], maxlen=1,
                                                             batch_size=4, seed=seed)]
    first = batches(1)
    assert [len(b) for b in first] == [4, 4]  # the last partial batch is dropped
    assert first == batches(1) and first != batches(2)


@given(maxlen=st.integers(1, 300), batch_tokens=st.integers(1, 20000))
def test_the_bucket_plan_covers_every_length_with_a_few_buckets(maxlen, batch_tokens):
    batch_tokens = max(batch_tokens, maxlen)  # hyperparams refuses less
    widths, sizes = data_load.bucket_plan(maxlen, batch_tokens)
    assert widths == sorted(set(widths)) and widths[0] >= 1 and widths[-1] == maxlen
    assert len(widths) <= 8
    assert all(1 <= n and n * w <= batch_tokens for n, w in zip(sizes, widths))


@pytest.mark.parametrize("count, maxlen, batch_tokens", [(500, 20, 120), (3000, 64, 2048), (7, 10, 40)])
def test_bucketed_batches_come_in_one_shape_per_bucket_and_use_every_pair_once(count, maxlen, batch_tokens):
    x, y = random_pairs(count, maxlen, seed=count)
    pairs, lengths = data_load.array_pairs(x, y)
    batches = [(s.numpy(), t.numpy()) for s, t in
               data_load.train_batches(pairs, maxlen=maxlen, batch_size=32, seed=1, batch_tokens=batch_tokens)]
    assert len(batches) == data_load.count_batches(lengths, maxlen=maxlen, batch_size=32, batch_tokens=batch_tokens)
    widths, sizes = data_load.bucket_plan(maxlen, batch_tokens)
    shapes = {s.shape for s, _ in batches} | {t.shape for _, t in batches}
    assert shapes <= set(zip(sizes, widths))  # whatever the corpus: at most one shape per bucket
    seen = []
    for src, tgt in batches:
        empty = (src == PAD).all(1)
        assert ((tgt == PAD).all(1) == empty).all()  # a filled-up row is empty on both sides
        assert not empty[0] and (np.diff(empty.astype(int)) >= 0).all()  # ... and only at the end
        rows = src[~empty, 0] - 4
        np.testing.assert_array_equal(src[~empty], x[rows, :src.shape[1]])  # the pairs, whole, sides together
        np.testing.assert_array_equal(tgt[~empty], y[rows, :src.shape[1]])
        longer = np.maximum((x[rows] != PAD).sum(1), (y[rows] != PAD).sum(1))
        bucket = widths.index(src.shape[1])  # every pair belongs to the bucket of this width
        assert (longer <= widths[bucket]).all() and (bucket == 0 or (longer > widths[bucket - 1]).all())
        seen += rows.tolist()
    assert sorted(seen) == list(range(count))
    again = [s.numpy().tolist() for s, _ in data_load.train_batches(pairs, maxlen=maxlen, batch_size=32, seed=1,
                                                                    batch_tokens=batch_tokens)]
    assert again == [s.tolist() for s, _ in batches]  # seeded


def test_bucket_padding_costs_little_against_padding_each_batch_to_its_longest():
    x, y = random_pairs(3000, 64, seed=0, shortest=4)
    real = padded = own = 0
    pairs, _ = data_load.array_pairs(x, y)
    for src, tgt in data_load.train_batches(pairs, maxlen=64, batch_size=32, seed=1, batch_tokens=2048):
        for ids in src.numpy(), tgt.numpy():
            filled = ids[(ids != PAD).any(1)]
            real += (ids != PAD).sum()
            padded += ids.size
            own += len(filled) * (filled != PAD).sum(1).max()  # the same real rows, padded to their longest
    assert real / padded > 0.8 * real / own  # the filled-up rows and the bucket's width are a small cost


def test_training_pipelines_run_without_the_autotuner():
    # with it, deleting an iterator at an epoch's end could wait for the autotuner's next pass
    x, y = random_pairs(50, 10, seed=3)
    pairs, _ = data_load.array_pairs(x, y)
    for batch_tokens in (0, 40):
        batches = data_load.train_batches(pairs, maxlen=10, batch_size=8, seed=1, batch_tokens=batch_tokens, total=9)
        assert batches.options().autotune.enabled is False
        assert sum(1 for _ in batches) == 9

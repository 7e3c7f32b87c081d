"""Bounded shapes: training batches come in one shape per length bucket, decoding pads sources to a
few widths, and neither the padding nor the filled-up rows change what is computed."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, strategies as st

import data_load
from conftest import ROOT
from decoding import beam_search_decoder, cached_greedy_decoder, decode_limits
from hyperparams import Hyperparams
from model import build_model
from optimizer import make_optimizer
from training import TrainStep
from vocab import EOS, PAD


def random_pairs(count, maxlen, seed, shortest=1):
    """count padded pairs (count, maxlen) x2 of random lengths shortest..maxlen; row i holds the
    value i + 4 on both sides, so that a batch row tells which pair it is."""
    rng = np.random.default_rng(seed)
    x, y = np.full((2, count, maxlen), PAD, np.int32)
    for i, (a, b) in enumerate(rng.integers(shortest, maxlen + 1, (count, 2))):
        x[i, :a], y[i, :b] = i + 4, i + 4
    return x, y


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


def test_empty_rows_change_neither_the_loss_nor_the_update():
    """A bucket's last batch is filled up with empty rows: they must count for nothing."""
    hp = Hyperparams(hidden_units=16, num_blocks=1, num_heads=2, dropout_rate=0.0, maxlen=8)
    x, y = random_pairs(6, 8, seed=3)
    x, y = np.minimum(x, 9), np.minimum(y, 9)  # a vocab of 10
    results = []
    for rows in 0, 5:
        keras.utils.set_random_seed(0)
        model = build_model(hp, 10, 10)
        optimizer = make_optimizer(hp)
        optimizer.build(model.trainable_variables)
        step = TrainStep(model, optimizer, hp.label_smoothing)
        fill = ((0, rows), (0, 0))
        step([(tf.constant(np.pad(x, fill)), tf.constant(np.pad(y, fill)))])
        results.append((step.interval.means(), step.interval.tokens.numpy(), model.get_weights()))
    (means, tokens, weights), (means_filled, tokens_filled, weights_filled) = results
    assert tokens == tokens_filled and means == pytest.approx(means_filled, rel=1e-6)
    for w, w_filled in zip(weights, weights_filled):
        np.testing.assert_allclose(w, w_filled, rtol=1e-5, atol=1e-7)


def test_a_step_that_expects_its_dataset_runs_every_batch_shape_on_one_graph():
    """Without expect(), tf.function traces the step for the first shapes and again for all (per flags)."""
    hp = Hyperparams(hidden_units=16, num_blocks=1, num_heads=2, dropout_rate=0.0, maxlen=16)
    x, y = random_pairs(200, 16, seed=5)
    x, y = np.minimum(x, 19), np.minimum(y, 19)  # a vocab of 20
    dataset = data_load.train_batches(data_load.array_pairs(x, y)[0], maxlen=16, batch_size=8, seed=1,
                                      batch_tokens=64)
    batches = list(dataset)
    assert len({src.shape for src, _ in batches}) >= 3
    results = []
    for expect in True, False:
        keras.utils.set_random_seed(0)
        model = build_model(hp, 20, 20)
        step = TrainStep(model, keras.optimizers.SGD(0.5), hp.label_smoothing)
        if expect:
            step.expect(dataset.element_spec)
        for i, (src, tgt) in enumerate(batches):
            step([(src, tgt)], measure_norm=i % 3 == 0)
            if i == 7:  # 3 shapes so far; further on, rounding differences grow with every update
                weights = model.get_weights()
        results.append((step._step.experimental_get_tracing_count(), weights))
    (traces, weights), (traces_alone, weights_alone) = results
    assert traces == 2 and traces_alone > 2  # one graph per measure_norm, whatever the shapes
    for w, w_alone in zip(weights, weights_alone):  # and the same updates as graphs of known shapes
        np.testing.assert_allclose(w, w_alone, rtol=1e-5, atol=2e-6)


def test_a_source_batch_is_cut_to_a_multiple_of_the_shape_step():
    from inference import source_batch

    rows = [[4] * length for length in [3, 9, 17, 2, 1, 40, 5]]
    assert [source_batch(rows[i:i + 2]).shape[1] for i in range(0, 7, 2)] == [16, 24, 40, 8]
    assert [data_load.round_up(n) for n in (1, 8, 9, 16)] == [8, 8, 16, 16]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(2)
    return build_model(Hyperparams(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=12,
                                   sinusoid=True), 12, 12)


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_padding_a_source_batch_to_a_wider_shape_leaves_the_translations_alone(model, decoder):
    decode = cached_greedy_decoder(model) if decoder == "greedy" else beam_search_decoder(model, 3, 0.6)
    src = tf.constant([[4, 5, 6, EOS, PAD], [7, 8, 9, 10, EOS], [11, EOS, PAD, PAD, PAD]])
    hp = Hyperparams(maxlen=12, sinusoid=True, decode_extra=4)
    limits = decode_limits(src, hp)
    wider = tf.pad(src, [[0, 0], [0, 11]])  # 16 columns, as a multiple of SHAPE_STEP would give
    assert (decode_limits(wider, hp).numpy() == limits.numpy()).all()
    narrow, wide = decode(src, limits), decode(wider, limits)
    if decoder == "beam":
        np.testing.assert_allclose(narrow[1], wide[1], rtol=1e-5)  # the scores too
        narrow, wide = narrow[0], wide[0]
    np.testing.assert_array_equal(narrow, wide)


def test_with_jit_a_run_compiles_once_per_batch_shape(tmp_path):
    """--jit: XLA compiles one program per batch shape, and an epoch has one shape per bucket."""
    argv = ["--measures", "train_bucketed", "--jit", "true", "--hidden_units", "16", "--num_blocks", "1",
            "--num_heads", "2", "--maxlen", "16", "--batch_size", "8", "--batch_tokens", "64",
            "--train_steps", "40", "--untimed_steps", "1"]
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    buckets = len(data_load.bucket_plan(16, 64)[0])
    assert 2 <= record["batch_shapes"] <= buckets
    assert record["batch_shapes"] <= record["xla_compilations"] <= record["batch_shapes"] + 2


def test_training_pipelines_run_without_the_autotuner():
    # with it, deleting an iterator at an epoch's end could wait for the autotuner's next pass
    x, y = random_pairs(50, 10, seed=3)
    pairs, _ = data_load.array_pairs(x, y)
    for batch_tokens in (0, 40):
        batches = data_load.train_batches(pairs, maxlen=10, batch_size=8, seed=1, batch_tokens=batch_tokens, total=9)
        assert batches.options().autotune.enabled is False
        assert sum(1 for _ in batches) == 9

"""training.py: the compiled step (gradient accumulation, recomputation, R-Drop, mixed precision, XLA) and the
loop's helpers."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import data_load
import model as model_module
import train
import vocab
from conftest import ROOT, SMALL, TWO_SRC, TWO_TGT, fresh_model, random_pairs, toy_pairs, values
from hyperparams import Hyperparams
from model import build_model, shift_right
from modules import loss_and_accuracy, rdrop_kl
from optimizer import make_optimizer
from training import TrainStep
from vocab import PAD

BENCH = str(ROOT / "benchmarks" / "bench.py")

pytestmark = pytest.mark.e2e  # optimizer steps of a model: training, if a tiny one


def test_accumulated_batches_give_the_update_of_one_batch_holding_them_all():
    accumulated, whole = fresh_model(), fresh_model()
    start = values(accumulated)
    step = TrainStep(accumulated, keras.optimizers.SGD(1.0), 0.1, accumulate=2)
    # one optimizer step: the first batch only adds to the sums
    step([(TWO_SRC[0], TWO_TGT[0]), (TWO_SRC[1], TWO_TGT[1])])
    for total in step.sums:  # which are empty again after the update
        np.testing.assert_array_equal(total.numpy(), 0.0)
    assert float(step.words.numpy()) == 0.0
    TrainStep(whole, keras.optimizers.SGD(1.0), 0.1)([(tf.concat(TWO_SRC, 0), tf.concat(TWO_TGT, 0))])
    assert int(step.optimizer.iterations) == 1
    assert not all(np.array_equal(a, s) for a, s in zip(values(accumulated), start))
    for a, b in zip(values(accumulated), values(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_recomputed_blocks_give_the_update_of_blocks_kept_for_the_backward_pass(monkeypatch):
    """--recompute: the blocks run again in the backward pass, with the dropout masks of the forward pass."""
    dropout = dict(dropout_rate=0.3, residual_dropout=0.3, ff_dropout=0.3, recompute=True)
    recomputing, keeping = fresh_model(**dropout), fresh_model(**dropout)
    TrainStep(recomputing, keras.optimizers.SGD(1.0), 0.1)([(TWO_SRC[0], TWO_TGT[0])])
    # the same seeds, each block's activations kept as without --recompute
    monkeypatch.setattr(model_module, "recomputed", lambda block, hidden, *, enc=None, **kwargs: block(
        hidden, training=True, **kwargs, **({} if enc is None else {"enc": enc}))[0])
    TrainStep(keeping, keras.optimizers.SGD(1.0), 0.1)([(TWO_SRC[0], TWO_TGT[0])])
    for a, b in zip(values(recomputing), values(keeping)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    without_dropout = fresh_model(recompute=True)
    TrainStep(without_dropout, keras.optimizers.SGD(1.0), 0.1)([(TWO_SRC[0], TWO_TGT[0])])
    assert not all(np.allclose(a, b) for a, b in zip(values(recomputing), values(without_dropout)))


@pytest.mark.parametrize("before, after", [(False, True), (True, False)], ids=["switched-on", "switched-off"])
def test_a_run_resumes_with_recompute_switched_on_or_off(tmp_path, before, after):
    """A run that ran out of memory goes on with --recompute true (and back): the checkpoints hold the same."""
    dropout = dict(dropout_rate=0.1, residual_dropout=0.1)
    saved = fresh_model(**dropout, recompute=before)
    optimizer = make_optimizer(Hyperparams(**SMALL))
    optimizer.build(saved.trainable_variables)
    TrainStep(saved, optimizer, 0.1)([(TWO_SRC[0], TWO_TGT[0])])
    checkpoints.save_checkpoint(train.make_checkpoint(saved, optimizer), str(tmp_path), "model_epoch_01_gs_1", keep=1)
    resumed = fresh_model(**dropout, recompute=after)
    optimizer = make_optimizer(Hyperparams(**SMALL))
    optimizer.build(resumed.trainable_variables)
    assert checkpoints.resume(train.make_checkpoint(resumed, optimizer), str(tmp_path))
    for a, b in zip(values(resumed), values(saved)):
        np.testing.assert_array_equal(a, b)
    TrainStep(resumed, optimizer, 0.1)([(TWO_SRC[1], TWO_TGT[1])])  # and trains on


def test_recomputing_the_blocks_lowers_the_peak_memory_of_a_training_step():
    """What --recompute is for: the backward pass holds one block's activations at a time."""
    src = tf.random.stateless_uniform((64, 32), (1, 2), 4, 11, tf.int32)
    tgt = tf.random.stateless_uniform((64, 32), (3, 4), 4, 13, tf.int32)
    peaks = {}
    for recompute in (False, True):
        model = fresh_model(hidden_units=32, num_blocks=3, maxlen=32, recompute=recompute)
        step = TrainStep(model, keras.optimizers.SGD(0.1), 0.1)
        step([(src, tgt)])  # traced, and the buffers of a step made once
        try:
            tf.config.experimental.reset_memory_stats("CPU:0")
        except ValueError:
            pytest.skip("this TensorFlow build keeps no statistics of its CPU allocator")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        step([(src, tgt)])
        peaks[recompute] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before  # the step's own
    assert peaks[True] < 0.5 * peaks[False], peaks


def test_rdrop_adds_the_symmetric_kl_between_two_passes():
    first = tf.random.stateless_normal((2, 4, 13), seed=(3, 4))
    second = tf.random.stateless_normal((2, 4, 13), seed=(5, 6))
    p, q = tf.nn.softmax(first).numpy(), tf.nn.softmax(second).numpy()
    real = (TWO_TGT[0] != PAD).numpy()
    expected = (0.5 * ((p * np.log(p / q)).sum(-1) + (q * np.log(q / p)).sum(-1)) * real).sum()
    assert float(rdrop_kl(first, second, TWO_TGT[0])) == pytest.approx(expected, rel=1e-5)
    assert float(rdrop_kl(first, first, TWO_TGT[0])) == 0.0
    # without dropout the two passes agree: the step is the plain one, the loss the mean of the two
    plain, rdrop = fresh_model(), fresh_model()
    TrainStep(plain, keras.optimizers.SGD(1.0), 0.1)([(TWO_SRC[0], TWO_TGT[0])])
    step = TrainStep(rdrop, keras.optimizers.SGD(1.0), 0.1, rdrop_alpha=5.0)
    step([(TWO_SRC[0], TWO_TGT[0])])
    for a, b in zip(values(plain), values(rdrop)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # with dropout they differ, and the KL term changes the update
    with_dropout = [fresh_model(dropout_rate=0.3) for _ in range(2)]
    for model, alpha in zip(with_dropout, (0.0, 5.0)):
        TrainStep(model, keras.optimizers.SGD(1.0), 0.1, rdrop_alpha=alpha)([(TWO_SRC[0], TWO_TGT[0])])
    assert not all(np.allclose(a, b) for a, b in zip(*map(values, with_dropout)))


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


def test_with_jit_a_run_compiles_once_per_batch_shape(tmp_path):
    """--jit: XLA compiles one program per batch shape, and an epoch has one shape per bucket."""
    argv = ["--measures", "train_bucketed", "--jit", "true", "--hidden_units", "16", "--num_blocks", "1",
            "--num_heads", "2", "--maxlen", "16", "--batch_size", "8", "--batch_tokens", "64",
            "--train_steps", "40", "--untimed_steps", "1"]
    result = subprocess.run([sys.executable, BENCH, *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    buckets = len(data_load.bucket_plan(16, 64)[0])
    assert 2 <= record["batch_shapes"] <= buckets
    assert record["batch_shapes"] <= record["xla_compilations"] <= record["batch_shapes"] + 2


SETTINGS = dict(hidden_units=32, num_blocks=2, num_heads=4, dropout_rate=0.0, maxlen=10, lr=0.003)

SRC = tf.constant([[5, 6, 7, 3, 0], [8, 9, 3, 0, 0]])

TGT_IN = tf.constant([[2, 5, 9, 4], [2, 7, 0, 0]])


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")


def toy_batches(count=192, batch_size=32):
    """Toy pairs as ids: word ids follow the toy vocabularies' order (4 + index)."""
    from conftest import DICTIONARY, GERMAN, ENGLISH
    src_vocab = vocab.WordVocab([*vocab.SPECIALS, *GERMAN])
    tgt_vocab = vocab.WordVocab([*vocab.SPECIALS, *ENGLISH])
    pairs = toy_pairs(count, seed=0)
    x, y, _, _ = data_load.create_data([s for s, _ in pairs], [t for _, t in pairs], src_vocab, tgt_vocab, 10)
    assert len(DICTIONARY) == 12
    return list(data_load.train_batches(data_load.array_pairs(x, y)[0], maxlen=10, batch_size=batch_size, seed=0))


@pytest.mark.parametrize("precision, dtype, tolerance, shared", [
    ("bf16", tf.bfloat16, 0.1, False), ("fp16", tf.float16, 0.02, False),
    ("bf16", tf.bfloat16, 0.1, True),  # the tied output layer reads the table in float32 too
], ids=["bf16", "fp16", "bf16-shared_embeddings"])
def test_16_bit_model_computes_what_the_float32_one_does(precision, dtype, tolerance, shared):
    keras.utils.set_random_seed(0)
    settings = dict(SETTINGS, vocab_type="subword", share_embeddings=shared)
    reference = build_model(Hyperparams(**settings), 16, 16)
    expected = reference((SRC, TGT_IN)).numpy()
    model = build_model(Hyperparams(**settings, mixed_precision=precision), 16, 16)
    model.set_weights(reference.get_weights())
    assert model.encode(SRC).dtype == dtype  # the blocks compute in 16 bits ...
    assert keras.mixed_precision.global_policy().name == "float32"  # ... and the global policy is left as it was
    assert all(w.dtype == "float32" for w in model.weights)  # weights stay float32
    logits = model((SRC, TGT_IN))
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits, expected, atol=tolerance * np.abs(expected).max())


def epoch_losses(epochs=2, **settings):
    """Mean training loss per epoch of a small model on the toy task."""
    hp = Hyperparams(**SETTINGS, **settings)
    keras.utils.set_random_seed(0)
    model = build_model(hp, 16, 16)
    optimizer = make_optimizer(hp)
    optimizer.build(model.trainable_variables)
    step = TrainStep(model, optimizer, hp.label_smoothing, jit=hp.jit)
    losses = []
    for _ in range(epochs):
        for src, tgt in toy_batches():
            step([(src, tgt)])
        loss_sum, steps = step.epoch.loss.numpy(), step.epoch.steps.numpy()
        step.epoch.reset()
        losses.append(loss_sum / steps)
    return np.array(losses)


@pytest.fixture(scope="module")
def float32_losses():
    return epoch_losses()


@pytest.mark.parametrize("settings, tolerance", [
    (dict(mixed_precision="bf16"), 0.05),
    (dict(mixed_precision="fp16"), 0.05),
    (dict(jit=True), 1e-3),  # the same float32 arithmetic, only compiled by XLA
    (dict(recompute=True, mixed_precision="bf16", jit=True), 0.05),  # the blocks run twice, in one XLA program
], ids=["bf16", "fp16", "jit", "recompute-bf16-jit"])
def test_training_follows_the_float32_run(settings, tolerance, float32_losses):
    losses = epoch_losses(**settings)
    assert np.isfinite(losses).all() and (np.diff(losses) < 0).all(), losses  # learning, every epoch
    np.testing.assert_allclose(losses, float32_losses, rtol=tolerance)


@pytest.mark.parametrize("precision, tolerance", [("none", 1e-5), ("fp16", 0.05)])
def test_the_logged_gradient_norm_is_that_of_the_loss_without_the_loss_scale(precision, tolerance):
    keras.utils.set_random_seed(0)
    hp = Hyperparams(**SETTINGS)
    reference = build_model(hp, 16, 16)
    src, tgt = toy_batches()[0]
    with tf.GradientTape() as tape:
        loss, _ = loss_and_accuracy(reference((src, shift_right(tgt)), training=True), tgt, hp.label_smoothing)
    expected = float(tf.linalg.global_norm(tape.gradient(loss, reference.trainable_variables)))

    hp = Hyperparams(**SETTINGS, mixed_precision=precision)
    model = build_model(hp, 16, 16)
    model.set_weights(reference.get_weights())
    optimizer = make_optimizer(hp)
    optimizer.build(model.trainable_variables)
    step = TrainStep(model, optimizer, hp.label_smoothing)
    step([(src, tgt)], True)
    assert float(step.grad_norm) == pytest.approx(expected, rel=tolerance)
    assert expected > 0.1

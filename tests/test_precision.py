"""Mixed precision and XLA: the same model computes the same thing, and training still learns."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import vocab
import data_load
from conftest import toy_pairs
from hyperparams import Hyperparams
from model import build_model, shift_right
from modules import loss_and_accuracy
from optimizer import make_optimizer
from training import TrainStep

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

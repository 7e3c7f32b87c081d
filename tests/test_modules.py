import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from modules import (Dropout, Embedding, FeedForward, MultiHeadAttention, PositionalEncoding, causal_mask, dropout,
                     label_smoothing, loss_and_accuracy, padding_mask, query_mask, sinusoid,
                     smoothed_cross_entropy)


@pytest.fixture(autouse=True)
def seed():
    keras.utils.set_random_seed(0)


def test_masks_follow_the_convention():
    ids = tf.constant([[5, 6, 0]])
    np.testing.assert_array_equal(padding_mask(ids), [[[[True, True, False]]]])
    np.testing.assert_array_equal(query_mask(ids)[0, 0, :, 0], [True, True, False])
    np.testing.assert_array_equal(causal_mask(3)[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_dropout_drops_the_rate_and_scales_the_rest(rate):
    x = tf.random.uniform((49, 41, 51), 1.0, 2.0)  # an odd number of elements: one 16-bit half is left over
    seed = tf.constant([3, 4])
    out = dropout(x, rate, seed).numpy()
    dropped = out == 0
    assert abs(dropped.mean() - rate) < 0.01  # 102,459 draws: a standard error of 0.0014 at rate 0.3
    np.testing.assert_allclose(out[~dropped], x.numpy()[~dropped] / (1 - rate), rtol=1e-6)
    np.testing.assert_array_equal(dropout(x, rate, seed), out)  # a function of the seed
    assert (dropout(x, rate, tf.constant([3, 5])).numpy() == 0).tolist() != dropped.tolist()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = dropout(x, rate, seed)
    np.testing.assert_allclose(tape.gradient(y, x), np.where(dropped, 0, 1 / (1 - rate)), rtol=1e-6)
    assert dropout(tf.cast(x, tf.bfloat16), rate, seed).dtype == tf.bfloat16


def test_dropout_layer_seeds_and_training():
    layer = Dropout(0.5)
    x = tf.ones((4, 64))
    np.testing.assert_array_equal(layer(x), x)  # not training: unchanged
    first, second = layer(x, training=True), layer(x, training=True)
    assert set(np.unique(first)) == {0.0, 2.0} and not np.array_equal(first, second)  # a new mask each call
    seed = tf.constant([7, 8])
    np.testing.assert_array_equal(layer(x, training=True, seed=seed), dropout(x, 0.5, seed))
    np.testing.assert_array_equal(Dropout(0.0)(x, training=True), x)
    with pytest.raises(ValueError, match="noise_shape"):  # a mask shared along axes is not what it draws
        Dropout(0.5, noise_shape=(4, 1))
    assert Dropout.from_config(layer.get_config()).rate == 0.5  # Keras's config (noise_shape None) round-trips


def test_embedding_zero_pad_row_and_scale():
    layer = Embedding(vocab_size=6, units=4)
    out = layer(tf.constant([[0, 3, 0]]))
    assert out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0, 0], np.zeros(4))
    np.testing.assert_allclose(out[0, 1], layer.table.numpy()[3] * 2.0, rtol=1e-6)  # sqrt(4)


def test_sinusoid_matches_the_formula():
    length, units = 7, 6
    table = sinusoid(length, units).numpy()
    for pos in range(length):
        for i in range(units // 2):
            angle = pos / 10000 ** (2 * i / units)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-5)


@pytest.mark.parametrize("learned", [False, True])
def test_positional_encoding_adds_one_row_per_position(learned):
    layer = PositionalEncoding(units=4, maxlen=5, learned=learned)
    out = layer(tf.zeros((2, 3, 4)))
    table = layer.table.numpy()[:3] if learned else sinusoid(3, 4).numpy()
    np.testing.assert_allclose(out[1], table, rtol=1e-6)


def attend(layer, queries, keys, key_ids, query_ids=None, causal=False):
    mask = padding_mask(key_ids)
    if causal:
        mask &= causal_mask(tf.shape(key_ids)[1])
    return layer(queries, keys, attention_mask=mask, return_weights=True,
                 query_mask=None if query_ids is None else query_mask(query_ids))


def test_padded_keys_get_zero_weight_and_pad_values_do_not_matter():
    layer = MultiHeadAttention(units=8, num_heads=2, dropout_rate=0.0)
    queries, keys = tf.random.normal((1, 2, 8)), tf.random.normal((1, 4, 8))
    ids = tf.constant([[4, 5, 6, 0]])
    out, weights = attend(layer, queries, keys, ids)
    assert out.shape == (1, 2, 8) and weights.shape == (1, 2, 2, 4)
    np.testing.assert_array_equal(weights[..., 3], 0.0)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1), 1.0, rtol=1e-6)
    changed = tf.concat([keys[:, :3], tf.random.normal((1, 1, 8))], axis=1)
    np.testing.assert_allclose(attend(layer, queries, changed, ids)[0], out, rtol=1e-5, atol=1e-6)


def test_padded_queries_attend_to_nothing():
    layer = MultiHeadAttention(units=8, num_heads=2, dropout_rate=0.0)
    x = tf.random.normal((1, 3, 8))
    ids = tf.constant([[4, 5, 0]])
    _, weights = attend(layer, x, x, ids, query_ids=ids)
    np.testing.assert_array_equal(weights[:, :, 2], 0.0)
    np.testing.assert_allclose(tf.reduce_sum(weights[:, :, :2], -1), 1.0, rtol=1e-6)


def test_causal_attention_ignores_the_future():
    layer = MultiHeadAttention(units=8, num_heads=2, dropout_rate=0.0)
    x = tf.random.normal((1, 5, 8))
    ids = tf.constant([[4, 5, 6, 7, 8]])
    full, weights = attend(layer, x, x, ids, causal=True)
    np.testing.assert_array_equal(np.triu(weights[0, 0], k=1), 0.0)
    prefix, _ = attend(layer, x[:, :3], x[:, :3], ids[:, :3], causal=True)
    np.testing.assert_allclose(prefix, full[:, :3], rtol=1e-5, atol=1e-6)


def test_feed_forward_shape_and_normalisation():
    out = FeedForward(units=8, inner_units=32)(tf.random.normal((2, 3, 8)))
    assert out.shape == (2, 3, 8)
    np.testing.assert_allclose(tf.reduce_mean(out, -1), 0.0, atol=1e-5)  # layer norm, gamma 1, beta 0


def test_label_smoothing_values_and_row_sums():
    smoothed = label_smoothing(tf.constant([[2, 0]]), depth=5, epsilon=0.1).numpy()
    np.testing.assert_allclose(smoothed.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(smoothed[0, 0], [0.02, 0.02, 0.92, 0.02, 0.02], rtol=1e-6)


def test_loss_and_accuracy_ignore_pad_positions():
    tgt = tf.constant([[1, 2, 0]])
    logits = tf.constant([[[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [9.0, 0.0, 0.0]]])
    loss, acc = loss_and_accuracy(logits, tgt, epsilon=0.0)
    assert float(acc) == pytest.approx(0.5)  # position 0 right, position 1 wrong, pad ignored
    expected = (-np.log(np.exp(5) / (np.exp(5) + 2)) - np.log(1 / (np.exp(5) + 2))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    other_pad_logits = tf.concat([logits[:, :2], tf.constant([[[0.0, 0.0, 9.0]]])], axis=1)
    assert float(loss_and_accuracy(other_pad_logits, tgt, 0.0)[0]) == pytest.approx(float(loss))


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_smoothed_cross_entropy_and_its_gradient_match_the_dense_formula(epsilon):
    logits = tf.random.stateless_normal((3, 4, 11), seed=(1, 2)) * 4.0
    labels = tf.constant([[1, 2, 0, 10], [3, 3, 3, 3], [0, 0, 7, 9]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        weights = tf.reshape(tf.range(12, dtype=tf.float32), (3, 4))  # positions weighed unevenly
        ours = smoothed_cross_entropy(logits, labels, epsilon)
        dense = tf.nn.softmax_cross_entropy_with_logits(labels=label_smoothing(labels, 11, epsilon), logits=logits)
        ours_total, dense_total = (tf.reduce_sum(weights * v) for v in (ours, dense))
    np.testing.assert_allclose(ours, dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours_total, logits), tape.gradient(dense_total, logits),
                               rtol=1e-4, atol=1e-6)

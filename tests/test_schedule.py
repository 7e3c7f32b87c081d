"""The paper's learning-rate schedule, exactly, how the optimizer follows it, and Adam's fused update."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import optimizer as optimizers
from hyperparams import Hyperparams


def test_the_paper_schedule_warms_up_then_decays_as_inverse_square_root():
    schedule = optimizers.PaperSchedule(512, 4000)
    rate = lambda step: float(schedule(step - 1))  # Keras counts steps from 0, the paper from 1
    assert rate(1) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert rate(2000) == pytest.approx(512 ** -0.5 * 2000 * 4000 ** -1.5)  # linear warm-up ...
    assert rate(4000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)  # ... to the peak, about 7.0e-4
    assert rate(4000) == pytest.approx(6.988e-4, rel=1e-3)
    assert rate(16000) == pytest.approx(rate(4000) / 2)  # then 1 / sqrt(step)
    assert float(optimizers.PaperSchedule(256, 100, scale=0.5)(99)) == pytest.approx(0.5 * 256 ** -0.5 / 10)


@pytest.mark.parametrize("schedule, expected", [("constant", lambda step: 0.01),
                                                ("paper", lambda step: 2 * 64 ** -0.5 * min(step ** -0.5,
                                                                                            step * 10 ** -1.5))])
def test_the_optimizer_uses_the_chosen_schedule(schedule, expected):
    hp = Hyperparams(hidden_units=64, num_heads=4, lr=0.01, lr_schedule=schedule, warmup_steps=10, lr_scale=2.0)
    optimizer = optimizers.make_optimizer(hp)
    weight = tf.Variable([1.0])
    optimizer.build([weight])
    for step in range(1, 25):
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(expected(step))
        optimizer.apply_gradients([(tf.constant([1.0]), weight)])
    assert not math.isnan(float(weight[0]))


def test_adam_updates_each_weight_in_one_fused_kernel_as_keras_adam_does_in_many():
    hp = Hyperparams(hidden_units=64, num_heads=4, lr_schedule="paper", warmup_steps=3, adam_epsilon=1e-6)
    start = np.random.default_rng(5).normal(size=(2, 7, 3)).astype("float32")
    gradients = [tf.random.stateless_normal(start.shape, seed=(step, 1)) for step in range(6)]
    # a gather's gradient: row 1 twice (a word seen twice in a batch), which Adam takes as their sum
    rows = tf.IndexedSlices(tf.ones((2, 7, 3)) / 4, tf.constant([1, 1]), tf.constant(start.shape))

    def train(optimizer, table_gradient):
        weight, table = tf.Variable(start[0]), tf.Variable(start)
        apply = tf.function(lambda gradient: optimizer.apply_gradients([(gradient, weight),
                                                                        (table_gradient(), table)]))
        for gradient in gradients:
            apply(gradient[0])
        return apply, weight.numpy(), table.numpy()

    fused = optimizers.make_optimizer(hp)
    apply, weight, table = train(fused, lambda: rows)
    op_types = [op.type for op in apply.get_concrete_function(gradients[0][0]).graph.get_operations()]
    assert op_types.count("ResourceApplyAdam") == 2  # each weight's update is one fused kernel
    schedule = optimizers.PaperSchedule(hp.hidden_units, hp.warmup_steps, hp.lr_scale)
    keras_adam = keras.optimizers.Adam(schedule, beta_1=hp.adam_beta1, beta_2=hp.adam_beta2, epsilon=hp.adam_epsilon)
    _, expected_weight, expected_table = train(keras_adam, lambda: tf.convert_to_tensor(rows))
    assert not np.allclose(weight, start[0]) and not np.allclose(table[1], start[1])
    np.testing.assert_allclose(weight, expected_weight, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table, expected_table, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(table[0], start[0])  # no gradient, no moments: untouched

"""optimizer.py: the learning-rate schedules, Adam in one kernel per weight, the moving average of the weights."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SMALL, TWO_SRC, TWO_TGT, fresh_model, values
from hyperparams import Hyperparams
from optimizer import DecayingSchedule, PaperSchedule, averaged_weights, make_optimizer
from training import TrainStep


def test_the_paper_schedule_warms_up_then_decays_as_inverse_square_root():
    schedule = PaperSchedule(512, 4000)
    rate = lambda step: float(schedule(step - 1))  # Keras counts steps from 0, the paper from 1
    assert rate(1) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert rate(2000) == pytest.approx(512 ** -0.5 * 2000 * 4000 ** -1.5)  # linear warm-up ...
    assert rate(4000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)  # ... to the peak, about 7.0e-4
    assert rate(4000) == pytest.approx(6.988e-4, rel=1e-3)
    assert rate(16000) == pytest.approx(rate(4000) / 2)  # then 1 / sqrt(step)
    assert float(PaperSchedule(256, 100, scale=0.5)(99)) == pytest.approx(0.5 * 256 ** -0.5 / 10)


@pytest.mark.parametrize("schedule, expected", [("constant", lambda step: 0.01),
                                                ("paper", lambda step: 2 * 64 ** -0.5 * min(step ** -0.5,
                                                                                            step * 10 ** -1.5))])
def test_the_optimizer_uses_the_chosen_schedule(schedule, expected):
    hp = Hyperparams(hidden_units=64, num_heads=4, lr=0.01, lr_schedule=schedule, warmup_steps=10, lr_scale=2.0)
    optimizer = make_optimizer(hp)
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

    fused = make_optimizer(hp)
    apply, weight, table = train(fused, lambda: rows)
    op_types = [op.type for op in apply.get_concrete_function(gradients[0][0]).graph.get_operations()]
    assert op_types.count("ResourceApplyAdam") == 2  # each weight's update is one fused kernel
    schedule = PaperSchedule(hp.hidden_units, hp.warmup_steps, hp.lr_scale)
    keras_adam = keras.optimizers.Adam(schedule, beta_1=hp.adam_beta1, beta_2=hp.adam_beta2, epsilon=hp.adam_epsilon)
    _, expected_weight, expected_table = train(keras_adam, lambda: tf.convert_to_tensor(rows))
    assert not np.allclose(weight, start[0]) and not np.allclose(table[1], start[1])
    np.testing.assert_allclose(weight, expected_weight, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table, expected_table, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(table[0], start[0])  # no gradient, no moments: untouched


@pytest.mark.e2e
@pytest.mark.parametrize("ema_decay, decay", [(0.75, 2 / 11), (0.1, 0.1)], ids=["warming-up", "capped"])
def test_the_moving_average_follows_the_weights_and_leaves_them_untouched(ema_decay, decay):
    hp = Hyperparams(**SMALL, lr_schedule="constant", lr=0.01, ema_decay=ema_decay)
    model = fresh_model()
    optimizer = make_optimizer(hp)
    step = TrainStep(model, optimizer, 0.1)
    step([(TWO_SRC[0], TWO_TGT[0])])
    first = values(model)  # the average starts as the weights after the first step
    step([(TWO_SRC[1], TWO_TGT[1])])
    second = values(model)
    # the decay after t = 1 earlier step: min(ema_decay, (1 + t) / (10 + t))
    with averaged_weights(model, optimizer):
        for average, a, b in zip(values(model), first, second):
            np.testing.assert_allclose(average, decay * a + (1 - decay) * b, rtol=1e-5, atol=1e-7)
    for weight, b in zip(values(model), second):
        np.testing.assert_array_equal(weight, b)  # bit for bit
    with averaged_weights(model, make_optimizer(Hyperparams(**SMALL))):  # no average kept: nothing changes
        for weight, b in zip(values(model), second):
            np.testing.assert_array_equal(weight, b)


def test_schedules_that_end_at_a_step():
    paper = PaperSchedule(256, 100, scale=2.0)
    cosine = DecayingSchedule(256, 100, 2.0, kind="cosine", total=1100)
    decay = DecayingSchedule(256, 100, 2.0, kind="paper_decay", total=1000, fraction=0.2)
    peak = 2.0 * (256 * 100) ** -0.5
    for iterations in (0, 49, 98):  # the same warm-up in all three (Keras counts from 0)
        assert float(cosine(iterations)) == pytest.approx(float(paper(iterations)), rel=1e-5)
        assert float(decay(iterations)) == pytest.approx(float(paper(iterations)), rel=1e-5)
    assert float(cosine(99)) == pytest.approx(peak, rel=1e-5)
    assert float(cosine(599)) == pytest.approx(peak / 2, rel=1e-4)  # half-way down
    assert float(cosine(1099)) == pytest.approx(0.0, abs=1e-9)
    assert float(decay(799)) == pytest.approx(float(paper(799)), rel=1e-5)  # decay starts at step 800
    assert float(decay(899)) == pytest.approx(float(paper(899)) * 0.5, rel=1e-4)
    assert float(decay(999)) == pytest.approx(0.0, abs=1e-9)
    hp = Hyperparams(lr_schedule="cosine", warmup_steps=10, max_steps=50)
    optimizer = make_optimizer(hp, total_steps=999)
    optimizer.iterations.assign(49)  # the 50th step: the last of --max_steps, which wins
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)

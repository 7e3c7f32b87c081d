"""The paper's learning-rate schedule, exactly, and how the optimizer follows it."""
import math

import keras
import pytest
import tensorflow as tf

import training
from hyperparams import Hyperparams


def test_the_paper_schedule_warms_up_then_decays_as_inverse_square_root():
    schedule = training.PaperSchedule(512, 4000)
    rate = lambda step: float(schedule(step - 1))  # Keras counts steps from 0, the paper from 1
    assert rate(1) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert rate(2000) == pytest.approx(512 ** -0.5 * 2000 * 4000 ** -1.5)  # linear warm-up ...
    assert rate(4000) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)  # ... to the peak, about 7.0e-4
    assert rate(4000) == pytest.approx(6.988e-4, rel=1e-3)
    assert rate(16000) == pytest.approx(rate(4000) / 2)  # then 1 / sqrt(step)
    assert float(training.PaperSchedule(256, 100, scale=0.5)(99)) == pytest.approx(0.5 * 256 ** -0.5 / 10)


@pytest.mark.parametrize("schedule, expected", [("constant", lambda step: 0.01),
                                                ("paper", lambda step: 2 * 64 ** -0.5 * min(step ** -0.5,
                                                                                            step * 10 ** -1.5))])
def test_the_optimizer_uses_the_chosen_schedule(schedule, expected):
    hp = Hyperparams(hidden_units=64, num_heads=4, lr=0.01, lr_schedule=schedule, warmup_steps=10, lr_scale=2.0)
    optimizer = training.make_optimizer(hp)
    weight = tf.Variable([1.0])
    optimizer.build([weight])
    for step in range(1, 25):
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(expected(step))
        optimizer.apply_gradients([(tf.constant([1.0]), weight)])
    assert not math.isnan(float(weight[0]))

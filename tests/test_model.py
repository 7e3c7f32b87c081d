import keras
import numpy as np
import pytest
import tensorflow as tf

from data_load import BOS, EOS, PAD
from hyperparams import Hyperparams
from model import build_model, greedy_decoder, shift_right

SMALL = dict(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=8)


@pytest.fixture(params=[True, False], ids=["sinusoid", "learned"])
def model(request):
    keras.utils.set_random_seed(0)
    return build_model(Hyperparams(**SMALL, sinusoid=request.param), 11, 13)


SRC = tf.constant([[4, 5, 6, EOS, PAD, PAD], [7, 8, EOS, PAD, PAD, PAD]])
TGT_IN = tf.constant([[BOS, 4, 9, 10, 5], [BOS, 6, 7, 8, 12]])


def test_shapes_and_shift_right(model):
    assert model((SRC, TGT_IN)).shape == (2, 5, 13)
    np.testing.assert_array_equal(shift_right(tf.constant([[4, 5, EOS, PAD]])), [[BOS, 4, 5, EOS]])


def test_changing_a_future_target_word_leaves_earlier_outputs(model):
    logits = model((SRC, TGT_IN))
    changed = tf.concat([TGT_IN[:, :3], tf.constant([[11], [3]]), TGT_IN[:, 4:]], axis=1)
    changed_logits = model((SRC, changed))
    np.testing.assert_allclose(changed_logits[:, :3], logits[:, :3], rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed_logits[:, 3:], logits[:, 3:])


def test_extra_source_padding_changes_nothing(model):
    logits = model((SRC, TGT_IN))
    padded = tf.pad(SRC, [[0, 0], [0, 2]])  # two more pad columns
    np.testing.assert_allclose(model((padded, TGT_IN)), logits, rtol=1e-5, atol=1e-5)


def test_greedy_decoder_matches_a_step_by_step_loop(model):
    out = greedy_decoder(model)(SRC, tf.constant(6)).numpy()
    assert out.shape == (2, 6)
    for row, src in zip(out, SRC):
        prefix = [BOS]
        for _ in range(6):
            logits = model((src[None], tf.constant([prefix])))
            prefix.append(int(tf.argmax(logits[0, -1])))
            if prefix[-1] == EOS:
                break
        expected = prefix[1:] + [PAD] * (7 - len(prefix))
        np.testing.assert_array_equal(row, expected)


def test_checkpoint_holds_every_weight(model, tmp_path):
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
    assert len(saved) == len(model.weights)
    fresh = build_model(Hyperparams(**SMALL, sinusoid=model.src_positions.table is None), 11, 13)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

"""weights.py: which weights a script loads from checkpoints written here by hand (no training): the latest, --ckpt,
the best, the mean of the newest, the moving average or the raw weights, and the one-line errors."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import weights
from conftest import SMALL, fresh_model
from hyperparams import Hyperparams
from messages import UserError
from optimizer import make_optimizer


def settings(logdir, **changes):
    return Hyperparams(**{**SMALL, "logdir": str(logdir), **changes})


def filled(model, value):
    """Sets every weight of the model to `value`; returns the model."""
    for w in model.weights:
        w.assign(tf.fill(w.shape, tf.cast(value, w.dtype)))
    return model


def checkpoint(logdir, name, value, average=None, keep=5):
    """Writes the checkpoint logdir/name as train.py would: every weight `value`, and an optimizer that keeps
    the moving average `average` of them (--ema_decay) if given."""
    model = filled(fresh_model(), value)
    hp = settings(logdir, ema_decay=0.99 if average is not None else 0.0)
    optimizer = make_optimizer(hp)
    optimizer.build(model.trainable_variables)
    if average is not None:
        for slot in optimizer._model_variables_moving_average:
            slot.assign(tf.fill(slot.shape, tf.cast(average, slot.dtype)))
    return checkpoints.save_checkpoint(tf.train.Checkpoint(model=model, optimizer=optimizer), str(logdir), name, keep)


def values(model):
    return {float(v) for w in model.trainable_weights for v in np.unique(w.numpy())}


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A logdir with three checkpoints, every weight 1, 2 and 4."""
    logdir = tmp_path_factory.mktemp("three")
    for epoch, value in enumerate((1.0, 2.0, 4.0), 1):
        checkpoint(logdir, checkpoints.checkpoint_name(epoch, 10 * epoch), value)
    return logdir


def test_the_latest_a_chosen_one_or_the_mean_of_the_newest(three):
    model, hp = fresh_model(), settings(three)
    assert weights.load_weights(model, hp) == ("model_epoch_03_gs_30", [str(three / "model_epoch_03_gs_30")])
    assert values(model) == {4.0}
    first = str(three / "model_epoch_01_gs_10")
    assert weights.load_weights(model, hp, ckpt=first)[0] == "model_epoch_01_gs_10" and values(model) == {1.0}
    name, used = weights.load_weights(model, settings(three, average_checkpoints=2))
    assert name == "model_epoch_03_gs_30_avg2" and len(used) == 2 and values(model) == {3.0}
    name, _ = weights.load_weights(model, settings(three, average_checkpoints=2),
                                   ckpt=str(three / "model_epoch_02_gs_20"))
    assert name == "model_epoch_02_gs_20_avg2" and values(model) == {1.5}  # the two up to the one given
    name, used = weights.load_weights(model, settings(three, average_checkpoints=4))
    assert name == "model_epoch_03_gs_30_avg3" and len(used) == 3 and values(model) == {float(np.float32(7 / 3))}


def test_the_moving_average_unless_raw_weights_are_asked_for(tmp_path, capsys):
    checkpoint(tmp_path, "model_epoch_01_gs_10", 2.0, average=0.5)
    model, hp = fresh_model(), settings(tmp_path, ema_decay=0.99)
    assert weights.load_weights(model, hp)[0] == "model_epoch_01_gs_10" and values(model) == {0.5}
    assert weights.load_weights(model, hp, raw=True)[0] == "model_epoch_01_gs_10_raw" and values(model) == {2.0}
    weights.load_weights(model, settings(tmp_path), raw=True)  # a model without a moving average: a note
    assert "--raw_weights changes nothing" in capsys.readouterr().err and values(model) == {2.0}


def test_the_best_checkpoint_and_what_does_not_go_with_it(tmp_path, capsys):
    checkpoint(tmp_path, "model_epoch_02_gs_20", 1.0)
    checkpoints.save_best(filled(fresh_model(), 7.0), str(tmp_path), "model_epoch_01_gs_10", 30.0, 10)
    model = fresh_model()
    assert weights.load_weights(model, settings(tmp_path), best=True)[0] == "model_epoch_01_gs_10_best"
    assert values(model) == {7.0}
    assert json.loads((tmp_path / "best" / "best.json").read_text())["dev_bleu"] == 30.0
    with pytest.raises(UserError, match="--best and --ckpt each choose the checkpoint; pass only one of them"):
        weights.load_weights(model, settings(tmp_path), ckpt="x", best=True)
    with pytest.raises(UserError, match="--best holds the weights dev BLEU was measured on"):
        weights.load_weights(model, settings(tmp_path, ema_decay=0.99), best=True, raw=True)
    weights.load_weights(model, settings(tmp_path, average_checkpoints=3), best=True)
    assert "--best translates with the best checkpoint alone" in capsys.readouterr().err


def test_fewer_checkpoints_than_asked_to_average_is_a_note(three, capsys):
    weights.load_weights(fresh_model(), settings(three, average_checkpoints=4))
    assert "averaging the 3 checkpoints in" in capsys.readouterr().err


def test_missing_unknown_damaged_and_mismatched_checkpoints_are_one_line(tmp_path):
    model = fresh_model()
    with pytest.raises(UserError, match=r"no checkpoint in .*; run train.py first \(or pass --ckpt\)"):
        weights.load_weights(model, settings(tmp_path))
    path = checkpoint(tmp_path, "model_epoch_01_gs_10", 1.0)
    with pytest.raises(UserError, match=r"nowhere: no such checkpoint; pass a path like"):
        weights.load_weights(model, settings(tmp_path), ckpt=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"nowhere is not among the checkpoints listed in"):
        weights.load_weights(model, settings(tmp_path, average_checkpoints=2), ckpt=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="does not fit the vocab in .* or the settings in"):
        weights.load_weights(fresh_model(hidden_units=8), settings(tmp_path, hidden_units=8))
    data, = [f for f in os.listdir(tmp_path) if f.startswith("model_epoch_01_gs_10.data")]
    with open(tmp_path / data, "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / data) // 2)
    with pytest.raises(UserError, match=rf"{path} is damaged \(.*\); pass an earlier checkpoint with --ckpt"):
        weights.load_weights(model, settings(tmp_path))

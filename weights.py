"""The weights a script uses: a checkpoint's (or the moving average kept in it), the best one, or the mean of several.

eval.py, translate.py, score.py, serve.py, export.py and plot_attention.py
load them through load_weights() (inference.load_trained); checkpoints.py
writes them while training.
"""
import os

import tensorflow as tf

import hyperparams
from checkpoints import DAMAGED, best_checkpoint, latest, listed, said
from messages import UserError, note
from optimizer import make_optimizer


def _holds_optimizer(path):
    """Whether a checkpoint holds the optimizer (train.py's do; the best one holds the model alone)."""
    return any(name.startswith("optimizer/") for name, _ in tf.train.list_variables(path))


def restore(model, hp, ckpt=None, raw=False):
    """Loads the model weights of checkpoint `ckpt` (default: the latest in logdir); returns its path.

    A model trained with --ema_decay gets the moving average of its weights,
    kept by the optimizer in the checkpoint, unless `raw`. (A best checkpoint
    holds the weights that were scored, the average if one was kept.)
    """
    path = ckpt or latest(hp.logdir)
    if path is None:
        raise UserError(f"no checkpoint in {hp.logdir}; run train.py first (or pass --ckpt)")
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{path}: no such checkpoint; pass a path like {hp.logdir}/model_epoch_01_gs_100")
    try:
        optimizer = None
        if hp.ema_decay and not raw and _holds_optimizer(path):
            optimizer = make_optimizer(hp)  # its variables as train.py made them, the averages among them
            optimizer.build(model.trainable_variables)
        parts = {"model": model} if optimizer is None else {"model": model, "optimizer": optimizer}
        tf.train.Checkpoint(**parts).read(path).expect_partial().assert_existing_objects_matched()
        if optimizer is not None:
            optimizer.finalize_variable_values(model.trainable_variables)  # Keras: copies the averages in
    except DAMAGED as e:
        raise UserError(f"{path} is damaged ({said(e)[:200]}); pass an earlier checkpoint with --ckpt "
                        f"(the others are in {os.path.dirname(path) or '.'})") from None
    except (ValueError, AssertionError) as e:
        raise UserError(f"{path} does not fit the vocab in {hp.vocab_dir} or the settings in "
                        f"{hyperparams.hparams_path(hp.logdir)} ({str(e).splitlines()[0]})") from None
    return path


def newest(logdir, count, last=None):
    """The paths of the newest `count` checkpoints in logdir (up to `last`, if given), oldest first."""
    paths = [os.path.join(logdir, name) for name in listed(logdir)]
    if last:
        names = [os.path.basename(p) for p in paths]
        if os.path.basename(last) not in names:
            raise UserError(f"{last} is not among the checkpoints listed in {logdir}; "
                            "pass one of them as --ckpt to average the ones before it")
        paths = paths[:names.index(os.path.basename(last)) + 1]
    return paths[-count:]


def average(model, hp, paths, raw=False):
    """Loads into `model` the mean of the weights of the checkpoints at `paths` (Vaswani et al. 2017, 6.1)."""
    total = None
    for path in paths:
        restore(model, hp, path, raw)
        values = [w.numpy() for w in model.weights]
        total = values if total is None else [a + b for a, b in zip(total, values)]
    for weight, value in zip(model.weights, total):
        weight.assign(value / len(paths))


def load_weights(model, hp, ckpt=None, best=False, raw=False):
    """Loads the weights asked for: the latest checkpoint, `ckpt`, the best one, or the average of the
    newest hp.average_checkpoints; with --ema_decay their moving average, unless `raw`. Returns a name for
    them (for results files) and the checkpoints used."""
    if raw and not hp.ema_decay:
        note(f"--raw_weights changes nothing: the model in {hp.logdir} was trained without --ema_decay")
    raw = raw and bool(hp.ema_decay)
    if best:
        if ckpt:
            raise UserError("--best and --ckpt each choose the checkpoint; pass only one of them")
        if raw:
            raise UserError("--best holds the weights dev BLEU was measured on, the moving average; "
                            "drop --raw_weights, or pass --ckpt to use a checkpoint's raw weights")
        if hp.average_checkpoints > 1:
            note(f"--best translates with the best checkpoint alone, not an average of "
                 f"--average_checkpoints {hp.average_checkpoints}")
        path = restore(model, hp, best_checkpoint(hp.logdir))
        return os.path.basename(path) + "_best", [path]
    suffix = "_raw" if raw else ""
    if hp.average_checkpoints == 1:
        path = restore(model, hp, ckpt, raw)
        return os.path.basename(path) + suffix, [path]
    paths = newest(hp.logdir, hp.average_checkpoints, last=ckpt)
    if not paths:
        raise UserError(f"no checkpoint in {hp.logdir}; run train.py first")
    if len(paths) < hp.average_checkpoints:
        note(f"averaging the {len(paths)} checkpoints in {hp.logdir}, fewer than "
             f"--average_checkpoints {hp.average_checkpoints}")
    average(model, hp, paths, raw)
    return f"{os.path.basename(paths[-1])}_avg{len(paths)}{suffix}", paths

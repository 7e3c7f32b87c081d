"""Checkpoints in logdir: the latest ones (resume), the best by dev BLEU, and weight averaging.

    logdir/model_epoch_EE_gs_N.*   the newest keep_checkpoints, listed in logdir/checkpoint
    logdir/best/model_epoch_EE_gs_N.* and best.json   the model with the highest dev BLEU so far

A checkpoint is written completely before the file that lists it, so a run
killed mid-write still finds the previous one.
"""
import json
import os

import tensorflow as tf

import hyperparams
from hyperparams import UserError, write_atomic

BEST = "best"  # the sub-directory of logdir holding the best checkpoint


def checkpoint_name(epoch, step):
    """The original's checkpoint (and results file) name."""
    return f"model_epoch_{epoch:02d}_gs_{step}"


def save_checkpoint(checkpoint, logdir, name, keep, worker=0):
    """Writes `checkpoint` as logdir/name, makes it the latest, and deletes all but the newest `keep`.

    The state file is rewritten only after the checkpoint is complete, so a
    run killed mid-write still resumes from the previous one. (CheckpointManager
    does the same but can only name files `prefix-N`.) Workers other than the
    chief take part in writing, as tf.distribute asks, into a directory of
    their own that is deleted at once.
    """
    if worker:
        scratch = os.path.join(logdir, f".worker_{worker}")
        checkpoint.write(os.path.join(scratch, name))
        tf.io.gfile.rmtree(scratch)
        return os.path.join(logdir, name)
    path = checkpoint.write(os.path.join(logdir, name))
    state = tf.train.get_checkpoint_state(logdir)
    names = [os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])]
    names = [n for n in names if n != name] + [name]
    # The state file lists bare names, which latest_checkpoint() joins with logdir, so a
    # moved logdir still finds its checkpoints (given an absolute save_dir, the function
    # stores names as they are). It is the public writer of that file; its deprecation
    # notice only points at CheckpointManager, so it is not shown.
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")
    try:
        tf.compat.v1.train.update_checkpoint_state(os.path.abspath(logdir), name, names[-keep:])
    finally:
        logger.setLevel(level)
    for old in names[:-keep]:
        _remove(logdir, old)
    return path


def _remove(directory, name):
    """Deletes the files of checkpoint `name` in directory."""
    for f in tf.io.gfile.glob(os.path.join(directory, name) + ".*"):
        tf.io.gfile.remove(f)


def resume(checkpoint, logdir):
    """Restores the latest checkpoint in logdir, if there is one; returns its path or None."""
    latest = tf.train.latest_checkpoint(logdir)
    if latest:
        try:
            checkpoint.read(latest).assert_consumed()
        except (ValueError, AssertionError) as e:
            raise UserError(f"{latest} does not fit this model or vocab ({str(e).splitlines()[0]}); "
                            "use another --logdir") from None
        print(f"resuming from {latest}")
    return latest


def restore(model, hp, ckpt=None):
    """Loads the model weights of checkpoint `ckpt` (default: the latest in logdir); returns its path."""
    path = ckpt or tf.train.latest_checkpoint(hp.logdir)
    if path is None:
        raise UserError(f"no checkpoint in {hp.logdir}; run train.py first (or pass --ckpt)")
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{path}: no such checkpoint; pass a path like {hp.logdir}/model_epoch_01_gs_100")
    try:
        tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()
    except (ValueError, AssertionError) as e:
        raise UserError(f"{path} does not fit the vocab in {hp.vocab_dir} or the settings in "
                        f"{hyperparams.hparams_path(hp.logdir)} ({str(e).splitlines()[0]})") from None
    return path


def best_record(logdir):
    """What logdir/best/best.json says ({"dev_bleu", "checkpoint", "step"}), or None before the first."""
    path = os.path.join(logdir, BEST, "best.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError:
        raise UserError(f"{path} is not the record train.py writes; delete {os.path.dirname(path)} "
                        "(the best model is then chosen anew)") from None


def save_best(model, logdir, name, dev_bleu, step, worker=0):
    """Keeps the model's weights as logdir/best/<name>, replacing the previous best.

    best.json moves to the new checkpoint only once it is complete, and the old
    one is deleted after that, so a kill at any moment leaves a usable best.
    """
    best_dir = os.path.join(logdir, BEST)
    checkpoint = tf.train.Checkpoint(model=model)
    if worker:  # takes part in writing, into a scratch directory (see save_checkpoint)
        return save_checkpoint(checkpoint, best_dir, name, keep=1, worker=worker)
    previous = best_record(logdir)
    path = checkpoint.write(os.path.join(best_dir, name))
    record = {"dev_bleu": dev_bleu, "checkpoint": os.path.join(best_dir, name), "step": step}
    write_atomic(os.path.join(best_dir, "best.json"), json.dumps(record, indent=2) + "\n")
    old = previous and os.path.basename(previous["checkpoint"])
    if old and old != name:
        _remove(best_dir, old)
    return path


def best_checkpoint(logdir):
    """The path of the best checkpoint in logdir, for eval.py --best."""
    record = best_record(logdir)
    if record is None:
        raise UserError(f"{logdir} has no best checkpoint; train with --dev_eval true to keep one")
    return os.path.join(logdir, BEST, os.path.basename(record["checkpoint"]))


def newest(logdir, count, last=None):
    """The paths of the newest `count` checkpoints in logdir (up to `last`, if given), oldest first."""
    state = tf.train.get_checkpoint_state(logdir)
    paths = [os.path.join(logdir, os.path.basename(p)) for p in (state.all_model_checkpoint_paths if state else [])]
    if last:
        names = [os.path.basename(p) for p in paths]
        if os.path.basename(last) not in names:
            raise UserError(f"{last} is not among the checkpoints listed in {logdir}; "
                            "pass one of them as --ckpt to average the ones before it")
        paths = paths[:names.index(os.path.basename(last)) + 1]
    return paths[-count:]


def average(model, hp, paths):
    """Loads into `model` the mean of the weights of the checkpoints at `paths` (Vaswani et al. 2017, 6.1)."""
    total = None
    for path in paths:
        restore(model, hp, path)
        values = [w.numpy() for w in model.weights]
        total = values if total is None else [a + b for a, b in zip(total, values)]
    for weight, value in zip(model.weights, total):
        weight.assign(value / len(paths))


def load_weights(model, hp, ckpt=None, best=False):
    """Loads the weights asked for: the latest checkpoint, `ckpt`, the best one, or the average of the
    newest hp.average_checkpoints. Returns a name for them (for results files) and the checkpoints used."""
    if best:
        if ckpt:
            raise UserError("--best and --ckpt each choose the checkpoint; pass only one of them")
        if hp.average_checkpoints > 1:
            print(f"note: --best translates with the best checkpoint alone, not an average of "
                  f"--average_checkpoints {hp.average_checkpoints}")
        path = restore(model, hp, best_checkpoint(hp.logdir))
        return os.path.basename(path) + "_best", [path]
    if hp.average_checkpoints == 1:
        path = restore(model, hp, ckpt)
        return os.path.basename(path), [path]
    paths = newest(hp.logdir, hp.average_checkpoints, last=ckpt)
    if not paths:
        raise UserError(f"no checkpoint in {hp.logdir}; run train.py first")
    if len(paths) < hp.average_checkpoints:
        print(f"note: averaging the {len(paths)} checkpoints in {hp.logdir}, fewer than "
              f"--average_checkpoints {hp.average_checkpoints}")
    average(model, hp, paths)
    return f"{os.path.basename(paths[-1])}_avg{len(paths)}", paths

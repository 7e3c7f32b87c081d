"""Checkpoints in logdir: the latest ones (resume), the best by dev BLEU, and weight averaging.

    logdir/model_epoch_EE_gs_N.*   the newest keep_checkpoints, listed in logdir/checkpoint
    logdir/best/model_epoch_EE_gs_N.* and best.json   the model with the highest dev BLEU so far

A checkpoint is written completely before the file that lists it, so a run
killed mid-write still finds the previous one; a write that fails (a full disk)
removes what it wrote. If the list itself is damaged or lost, the checkpoints
on disk are found by their global step. A damaged checkpoint stops the script
with one line naming it; logdir/.lock keeps a second train.py out.
"""
import contextlib
import fcntl
import json
import os
import re
import shutil

import tensorflow as tf

import hyperparams
from cli import UserError, write_atomic
from training import make_optimizer


BEST = "best"  # the sub-directory of logdir holding the best checkpoint


NAME = re.compile(r"model_epoch_\d+_gs_(\d+)")


def checkpoint_name(epoch, step):
    """The original's checkpoint (and results file) name."""
    return f"model_epoch_{epoch:02d}_gs_{step}"


@contextlib.contextmanager
def quiet_tensorflow_warnings():
    """TensorFlow's Python warnings off inside: its checkpoint-state functions announce their
    deprecation (they are still the public way to that file) and every parse problem."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def _state_names(logdir):
    """The names logdir/checkpoint lists, oldest first; None if that file is missing or damaged."""
    if not os.path.exists(os.path.join(logdir, "checkpoint")):
        return None
    with quiet_tensorflow_warnings():
        try:
            state = tf.train.get_checkpoint_state(logdir)
        except (ValueError, tf.errors.OpError):  # not text, or not a checkpoint state
            state = None
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths] if state else None


def _on_disk(logdir):
    """The checkpoints in logdir that have an .index file, as names, by global step."""
    names = [n.removesuffix(".index") for n in os.listdir(logdir) if n.endswith(".index")] \
        if os.path.isdir(logdir) else []
    return sorted((n for n in names if NAME.fullmatch(n)), key=lambda n: int(NAME.fullmatch(n)[1]))


_noted = set()  # logdirs whose damaged state file was reported (once per run is enough)


def listed(logdir):
    """The checkpoints in logdir, oldest first, as names: those its state file lists.

    If the state file is missing or damaged, or lists none of the checkpoints
    on disk, those on disk are taken instead, in order of global step, with a
    note: a logdir that holds checkpoints is never taken for an empty one.
    """
    on_disk = _on_disk(logdir)
    names = [n for n in _state_names(logdir) or [] if n in on_disk]
    if on_disk and not names:
        if logdir not in _noted:
            _noted.add(logdir)
            print(f"note: {os.path.join(logdir, 'checkpoint')} is missing or damaged; using the checkpoints "
                  f"found in {logdir}, the newest being {on_disk[-1]}")
        return on_disk
    return names


def latest(logdir):
    """The path of the newest checkpoint in logdir, or None."""
    names = listed(logdir)
    return os.path.join(logdir, names[-1]) if names else None


def _write(checkpoint, path):
    """checkpoint.write(path), or, if that fails (a full disk), a UserError and nothing left of it."""
    existed = tf.io.gfile.exists(path + ".index")
    try:
        return checkpoint.write(path)
    except (tf.errors.OpError, OSError) as e:
        shutil.rmtree(path + "_temp", ignore_errors=True)  # where TensorFlow writes the parts first
        if not existed:
            _remove(os.path.dirname(path), os.path.basename(path))
        raise UserError(f"cannot write the checkpoint {path} ({_reason(e)}); the checkpoints written before it "
                        "are untouched; free some space and run the same command again") from None


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
        try:
            _write(checkpoint, os.path.join(scratch, name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return os.path.join(logdir, name)
    names = [n for n in listed(logdir) if n != name] + [name]
    path = _write(checkpoint, os.path.join(logdir, name))
    # The state file lists bare names, which latest_checkpoint() joins with logdir, so a
    # moved logdir still finds its checkpoints (given an absolute save_dir, the function
    # stores names as they are). It is the public writer of that file.
    try:
        with quiet_tensorflow_warnings():
            tf.compat.v1.train.update_checkpoint_state(os.path.abspath(logdir), name, names[-keep:])
    except (tf.errors.OpError, OSError) as e:
        _remove(logdir, name)  # complete, but never listed
        raise UserError(f"cannot write {os.path.join(logdir, 'checkpoint')} ({getattr(e, 'strerror', None) or e}); "
                        "free some space and run the same command again") from None
    for old in names[:-keep]:
        _remove(logdir, old)
    return path


def _remove(directory, name):
    """Deletes the files of checkpoint `name` in directory."""
    for f in tf.io.gfile.glob(os.path.join(directory, name) + ".*"):
        tf.io.gfile.remove(f)


DAMAGED = (tf.errors.OpError, IndexError)  # what reading a truncated or corrupt checkpoint raises


def _said(e):
    """The first line of what TensorFlow said about a checkpoint it could not read or write."""
    return (str(getattr(e, "message", e)).strip().splitlines() or [type(e).__name__])[0]


def _reason(e):
    """Why a write failed, in a few words: an OSError's, or the last clause of TensorFlow's message
    ("{{function_node ...}} path; No space left on device [Op:SaveV2]")."""
    if getattr(e, "strerror", None):
        return e.strerror
    return re.sub(r"\s*\[Op:\w+\]$", "", _said(e).rsplit(";", 1)[-1]).strip()[:200]


@contextlib.contextmanager
def exclusive(logdir):
    """Within `with`, this process alone trains in logdir: a second one stops with one line.

    The lock is an flock on logdir/.lock, which the operating system releases
    when the process ends however it ends, so a crashed run leaves no lock
    behind (the file stays, naming the last process that held it).
    """
    path = os.path.join(logdir, ".lock")
    os.makedirs(logdir, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{holder} is training in {logdir} (it holds {path}); wait for it to end, stop it, "
                            "or use another --logdir") from None
        f.truncate(0)
        f.write(f"train.py (process {os.getpid()})")
        f.flush()
        yield


def resume(checkpoint, logdir):
    """Restores the latest checkpoint in logdir, if there is one; returns its path or None."""
    path = latest(logdir)
    if path:
        try:
            checkpoint.read(path).assert_consumed()
        except DAMAGED as e:
            names = listed(logdir)
            before = f" to resume from {names[-2]}," if len(names) > 1 else ""
            raise UserError(f"{path} is damaged ({_said(e)[:200]});{before} move its files "
                            f"({os.path.basename(path)}.*) out of {logdir}") from None
        except (ValueError, AssertionError) as e:
            raise UserError(f"{path} does not fit this model or vocab ({str(e).splitlines()[0]}); "
                            "use another --logdir") from None
        print(f"resuming from {path}")
    return path


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
        raise UserError(f"{path} is damaged ({_said(e)[:200]}); pass an earlier checkpoint with --ckpt "
                        f"(the others are in {os.path.dirname(path) or '.'})") from None
    except (ValueError, AssertionError) as e:
        raise UserError(f"{path} does not fit the vocab in {hp.vocab_dir} or the settings in "
                        f"{hyperparams.hparams_path(hp.logdir)} ({str(e).splitlines()[0]})") from None
    return path


def best_record(logdir):
    """What logdir/best/best.json says ({"dev_bleu", "checkpoint", "step"}, and "stale": the evaluations since
    that did not beat it, if any), or None before the first."""
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
    path = _write(checkpoint, os.path.join(best_dir, name))
    record = {"dev_bleu": dev_bleu, "checkpoint": os.path.join(best_dir, name), "step": step}
    write_atomic(os.path.join(best_dir, "best.json"), json.dumps(record, indent=2) + "\n")
    old = previous and os.path.basename(previous["checkpoint"])
    if old and old != name:
        _remove(best_dir, old)
    return path


def note_stale(logdir, stale):
    """Records in best.json how many dev evaluations since the best did not beat it ("stale", for --patience)."""
    record = best_record(logdir)
    write_atomic(os.path.join(logdir, BEST, "best.json"), json.dumps({**record, "stale": stale}, indent=2) + "\n")


def best_checkpoint(logdir):
    """The path of the best checkpoint in logdir, for eval.py --best."""
    record = best_record(logdir)
    if record is None:
        raise UserError(f"{logdir} has no best checkpoint; train with --dev_eval true to keep one")
    return os.path.join(logdir, BEST, os.path.basename(record["checkpoint"]))


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
        print(f"note: --raw_weights changes nothing: the model in {hp.logdir} was trained without --ema_decay")
    raw = raw and bool(hp.ema_decay)
    if best:
        if ckpt:
            raise UserError("--best and --ckpt each choose the checkpoint; pass only one of them")
        if raw:
            raise UserError("--best holds the weights dev BLEU was measured on, the moving average; "
                            "drop --raw_weights, or pass --ckpt to use a checkpoint's raw weights")
        if hp.average_checkpoints > 1:
            print(f"note: --best translates with the best checkpoint alone, not an average of "
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
        print(f"note: averaging the {len(paths)} checkpoints in {hp.logdir}, fewer than "
              f"--average_checkpoints {hp.average_checkpoints}")
    average(model, hp, paths, raw)
    return f"{os.path.basename(paths[-1])}_avg{len(paths)}{suffix}", paths

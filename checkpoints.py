"""Checkpoints in logdir: the latest ones (resume), the best by dev BLEU, the logdir's lock (weights.py reads them).

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

from files import read_record, remove_orphans, write_atomic
from messages import UserError, note


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
            note(f"{os.path.join(logdir, 'checkpoint')} is missing or damaged; using the checkpoints "
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


def said(e):
    """The first line of what TensorFlow said about a checkpoint it could not read or write."""
    return (str(getattr(e, "message", e)).strip().splitlines() or [type(e).__name__])[0]


def _reason(e):
    """Why a write failed, in a few words: an OSError's, or the last clause of TensorFlow's message
    ("{{function_node ...}} path; No space left on device [Op:SaveV2]")."""
    if getattr(e, "strerror", None):
        return e.strerror
    return re.sub(r"\s*\[Op:\w+\]$", "", said(e).rsplit(";", 1)[-1]).strip()[:200]


LOCK = ".lock"  # in logdir: held by the process that trains there


@contextlib.contextmanager
def exclusive(logdir):
    """Within `with`, this process alone trains in logdir: a second one stops with one line.

    The lock is an flock on logdir/.lock, which the operating system releases
    when the process ends however it ends, so a crashed run leaves no lock
    behind (the file stays, naming the last process that held it). A logdir
    this run created is removed again if the run fails before writing to it.
    Holding the lock, it removes what a killed run left half written.
    """
    path, created = os.path.join(logdir, LOCK), missing_directories(logdir)
    os.makedirs(logdir, exist_ok=True)
    try:
        lock = open(path, "a+", encoding="utf-8")
    except OSError as e:  # a directory named .lock, no permission
        raise UserError(f"cannot open the lock file {path} ({e.strerror}); remove it, or use another "
                        "--logdir") from None
    try:
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise UserError(f"{holder} is training in {logdir} (it holds {path}); wait for it to end, stop "
                                "it, or use another --logdir") from None
            lock.truncate(0)
            lock.write(f"train.py (process {os.getpid()})")
            lock.flush()
            remove_unfinished(logdir)
            yield
    except BaseException:
        if created and os.listdir(logdir) == [LOCK]:  # the run failed before it wrote anything
            os.remove(path)
            for directory in created:  # the logdir, then the parents made for it, while empty
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        raise


def missing_directories(path):
    """The directories of path that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing



def remove_unfinished(logdir):
    """Deletes what a run killed while writing left in logdir: TensorFlow's `<checkpoint>_temp` directories,
    and the temporary files of hparams.json and best.json."""
    for directory in (logdir, os.path.join(logdir, BEST)):
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.endswith("_temp") and NAME.fullmatch(name.removesuffix("_temp")):
                    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            remove_orphans(directory, r"hparams\.json|best\.json")


def resume(checkpoint, logdir):
    """Restores the latest checkpoint in logdir, if there is one; returns its path or None."""
    path = latest(logdir)
    if path:
        try:
            checkpoint.read(path).assert_consumed()
        except DAMAGED as e:
            names = listed(logdir)
            before = f" to resume from {names[-2]}," if len(names) > 1 else ""
            raise UserError(f"{path} is damaged ({said(e)[:200]});{before} move its files "
                            f"({os.path.basename(path)}.*) out of {logdir}") from None
        except (ValueError, AssertionError) as e:
            raise UserError(f"{path} does not fit this model or vocab ({str(e).splitlines()[0]}); "
                            "use another --logdir") from None
        print(f"resuming from {path}")
    return path


# best.json, as files.read_record checks it; "stale": the dev evaluations since the best that did not beat it
BEST_RECORD = {"dev_bleu": float, "checkpoint": str, "step": int, "stale?": int}


def best_record(logdir):
    """What logdir/best/best.json says (BEST_RECORD), or None before the first."""
    path = os.path.join(logdir, BEST, "best.json")
    return read_record(path, BEST_RECORD, fix=f"delete {os.path.dirname(path)} (the best model is then chosen anew)")


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

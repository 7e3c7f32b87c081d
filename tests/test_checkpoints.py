"""checkpoints.py: checkpoints written whole and found again, the best one, the lock, what a killed run left."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import checkpoints
import eval as evaluate
import train
from conftest import ROOT, SESSION_BATCH, SESSION_STEPS, SESSION_TRAIN, TINY_MODEL, fails, flag, snapshot
from hyperparams import Hyperparams
from messages import UserError
from model import build_model


@pytest.mark.e2e
def test_a_full_disk_while_checkpointing_leaves_no_part_and_the_last_checkpoint(trained_copy, capsys, monkeypatch):
    directory, flags = trained_copy
    logdir = Path(flag(flags, "logdir"))
    write = tf.train.Checkpoint.write

    def disk_fills(self, path, *args, **kwargs):
        os.makedirs(path + "_temp")
        Path(path + "_temp", "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 100)
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}_temp/part; No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", disk_fills)
    before = sorted(os.listdir(logdir))
    line = fails(train.main, "train.py", flags + SESSION_TRAIN + ["--num_epochs", "3"], capsys, monkeypatch,
                 after_work=True)
    assert line.startswith("train.py: error: cannot write the checkpoint") and "No space left on device" in line
    after = sorted(n for n in os.listdir(logdir) if not n.startswith("events."))  # TensorBoard's own file
    assert after == sorted(n for n in before if not n.startswith("events."))
    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    assert checkpoints.latest(str(logdir)).endswith("model_epoch_02_gs_24")


@pytest.mark.e2e
@pytest.mark.parametrize("state", [b"garbage { not a state", None], ids=["garbage", "deleted"])
def test_a_damaged_checkpoint_list_resumes_from_the_newest_checkpoint(trained_copy, state, capsys):
    directory, flags = trained_copy
    logdir = Path(flag(flags, "logdir"))
    if state is None:
        (logdir / "checkpoint").unlink()
    else:
        (logdir / "checkpoint").write_bytes(state)
    train.main(flags + SESSION_TRAIN + ["--num_epochs", "3", "--lr", "2e-4"])  # trained at the default 1e-4
    out = capsys.readouterr()
    assert "note: " in out.err and "is missing or damaged; using the checkpoints found" in out.err  # a note: stderr
    notes = [line for line in out.err.splitlines() if "other training settings" in line]  # and the new rate, once
    assert notes == [f"note: the run in {logdir} goes on with other training settings than it began with "
                     "(lr 0.0001 -> 0.0002): its rate, batches and loss follow them from here"]
    out = out.out
    assert f"resuming from {logdir / 'model_epoch_02_gs_24'}" in out
    assert checkpoints.listed(str(logdir)) == ["model_epoch_01_gs_12", "model_epoch_02_gs_24", "model_epoch_03_gs_36"]


@pytest.mark.parametrize("state", [b"\xff\xfe", b"", b'model_checkpoint_path: "model_epoch_09_gs_99"\n'],
                         ids=["binary", "empty", "lists-a-deleted-one"])
def test_checkpoints_on_disk_are_found_whatever_the_list_says(tmp_path, state):
    for step in (30, 4, 12):  # by global step, not by name
        (tmp_path / f"model_epoch_0{step // 4}_gs_{step}.index").write_bytes(b"")
    (tmp_path / "checkpoint").write_bytes(state)
    assert checkpoints.listed(str(tmp_path)) == ["model_epoch_01_gs_4", "model_epoch_03_gs_12",
                                                 "model_epoch_07_gs_30"]
    assert checkpoints.latest(str(tmp_path)) == str(tmp_path / "model_epoch_07_gs_30")


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["index", "data"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(trained_copy, damage, capsys, monkeypatch):
    directory, flags = trained_copy
    logdir = Path(flag(flags, "logdir"))
    path = logdir / ("model_epoch_02_gs_24.index" if damage == "index" else
                     "model_epoch_02_gs_24.data-00000-of-00001")
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])  # cut off
    before = snapshot(logdir)
    line = fails(evaluate.main, "eval.py", flags, capsys, monkeypatch)
    assert f"{logdir / 'model_epoch_02_gs_24'} is damaged (" in line
    assert "pass an earlier checkpoint with --ckpt" in line
    line = fails(train.main, "train.py", flags + SESSION_TRAIN + ["--num_epochs", "3"], capsys, monkeypatch)
    assert f"{logdir / 'model_epoch_02_gs_24'} is damaged (" in line and "move its files" in line
    assert snapshot(logdir) == before


@pytest.mark.e2e
def test_a_second_training_on_one_logdir_stops_and_a_killed_one_leaves_no_lock(trained_copy, capsys, monkeypatch):
    directory, flags = trained_copy
    logdir = flag(flags, "logdir")
    with checkpoints.exclusive(logdir):
        line = fails(train.main, "train.py", flags + SESSION_TRAIN + ["--num_epochs", "3"], capsys, monkeypatch)
    assert f"train.py (process {os.getpid()}) is training in {logdir}" in line and "another --logdir" in line
    # A process that holds the lock and is killed: the operating system releases it.
    holder = subprocess.Popen([sys.executable, "-c", "import checkpoints, sys, time\n"
                               f"with checkpoints.exclusive({logdir!r}):\n print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match="is training in"):
        with checkpoints.exclusive(logdir):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with checkpoints.exclusive(logdir):
        pass


@pytest.mark.e2e
def test_checkpoints_are_named_by_epoch_and_global_step(trained_model):
    _, flags = trained_model
    steps = SESSION_STEPS
    logdir = flags[flags.index("--logdir") + 1]
    assert os.path.basename(tf.train.latest_checkpoint(logdir)) == f"model_epoch_02_gs_{2 * steps}"
    assert os.path.exists(os.path.join(logdir, f"model_epoch_01_gs_{steps}.index"))


@pytest.mark.e2e
def test_old_checkpoints_beyond_keep_are_deleted(trained_model, tmp_path):
    _, flags = trained_model
    steps = SESSION_STEPS
    logdir = tmp_path / "keep1"
    train.main(flags + TINY_MODEL + SESSION_BATCH + ["--logdir", str(logdir), "--num_epochs", "2",
                                            "--keep_checkpoints", "1"])
    assert sorted(p for p in os.listdir(logdir) if p.endswith(".index")) == [
        f"model_epoch_02_gs_{2 * steps}.index"]


@pytest.mark.e2e
def test_relative_logdir_is_found_again(trained_model, tmp_path, monkeypatch):
    _, flags = trained_model
    steps = SESSION_STEPS
    monkeypatch.chdir(tmp_path)
    relative = ["--logdir", "runs/a", "--results_dir", "out"]
    train.main(flags + TINY_MODEL + SESSION_BATCH + relative + ["--num_epochs", "1"])
    evaluate.main(flags + relative)
    assert (tmp_path / "out" / f"model_epoch_01_gs_{steps}").exists()
    os.rename(tmp_path / "runs", tmp_path / "moved")  # a moved logdir keeps working
    assert tf.train.latest_checkpoint("moved/a") == os.path.join("moved/a", f"model_epoch_01_gs_{steps}")


@pytest.mark.e2e
def test_a_checkpoint_cut_off_while_written_is_never_resumed(small_corpus, tmp_path, monkeypatch):
    flags = small_corpus
    write = tf.train.Checkpoint.write

    def dies_during_the_second_write(self, path, *args, **kwargs):
        if "gs_6" in path:  # the process dies after part of the files are on disk
            with open(path + ".index", "wb") as f:
                f.write(b"half a file")
            raise SystemExit("killed")
        return write(self, path, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "write", dies_during_the_second_write)
    with pytest.raises(SystemExit):
        train.main(flags + ["--num_epochs", "2", "--save_every", "3"])
    assert (tmp_path / "logdir" / "model_epoch_02_gs_6.index").exists()  # half written ...
    assert os.path.basename(tf.train.latest_checkpoint(str(tmp_path / "logdir"))) == "model_epoch_01_gs_4"
    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    train.main(flags + ["--num_epochs", "2", "--save_every", "3"])  # ... so this resumes from gs_4
    assert os.path.basename(tf.train.latest_checkpoint(str(tmp_path / "logdir"))) == "model_epoch_02_gs_8"


def test_the_best_checkpoint_is_replaced_only_once_the_new_one_is_complete(tmp_path):
    model = build_model(Hyperparams(hidden_units=16, num_blocks=1, num_heads=2), 10, 10)
    checkpoints.save_best(model, str(tmp_path), "model_epoch_01_gs_5", 10.0, 5)
    checkpoints.save_best(model, str(tmp_path), "model_epoch_02_gs_10", 12.5, 10)
    assert checkpoints.best_record(str(tmp_path)) == {
        "dev_bleu": 12.5, "checkpoint": str(tmp_path / "best" / "model_epoch_02_gs_10"), "step": 10}
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "best").iterdir()) == [
        "best", "model_epoch_02_gs_10", "model_epoch_02_gs_10"]  # .json, .index, .data-*: epoch 1's are gone
    assert checkpoints.best_checkpoint(str(tmp_path)) == str(tmp_path / "best" / "model_epoch_02_gs_10")
    (tmp_path / "best" / "best.json").write_text("{")
    with pytest.raises(UserError, match="best.json is damaged \\(not JSON.*\\); delete"):
        checkpoints.best_record(str(tmp_path))


def test_a_lock_that_is_a_directory_is_one_line(small_corpus, tmp_path, capsys, monkeypatch):
    (tmp_path / "logdir" / ".lock").mkdir(parents=True)
    line = fails(train.main, "train.py", small_corpus + ["--num_epochs", "1"], capsys, monkeypatch)
    assert f"cannot open the lock file {tmp_path / 'logdir' / '.lock'} (Is a directory); remove it" in line


@pytest.mark.e2e
def test_a_failed_start_leaves_no_new_logdir(trained_model, tmp_path, capsys, monkeypatch):
    _, flags = trained_model
    logdir = tmp_path / "new" / "logdir"
    line = fails(train.main, "train.py", flags + SESSION_TRAIN + ["--vocab_dir", str(tmp_path / "none"),
                                                                   "--logdir", str(logdir)], capsys, monkeypatch)
    assert "not found; run prepro.py first" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.e2e
def test_what_a_killed_run_left_half_written_is_removed_when_training_resumes(trained_copy):
    directory, flags = trained_copy
    logdir = Path(flag(flags, "logdir"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = [logdir / "model_epoch_03_gs_30_temp", logdir / f"hparams.json.tmp{dead.stdout.strip()}"]
    left[0].mkdir()
    (left[0] / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    left[1].write_text("{")
    train.main(flags + SESSION_TRAIN + ["--num_epochs", "3"])
    assert not any(path.exists() for path in left)
    assert checkpoints.latest(str(logdir)).endswith("model_epoch_03_gs_36")

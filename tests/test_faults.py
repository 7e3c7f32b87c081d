"""Faults and user mistakes: each ends in one line on stderr and exit code 2, and no file is lost or mixed.

Every test lists the directories involved before and after: nothing deleted,
nothing half-written, old files intact. A full disk is simulated by making
the second of two writes fail (no special rights needed).
"""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import checkpoints
import cli
import ct2
import files
import eval as evaluate
import export
import plot_attention
import prepro
import train
import translate
import vocab
from conftest import ROOT, TINY_MODEL, corpus_flags, toy_pairs, write_lines
from hyperparams import Hyperparams
from messages import UserError

TRAIN = TINY_MODEL + ["--batch_size", "16"]


def snapshot(*roots):
    """Every path under the roots, with the sha256 of each file: equal snapshots mean nothing changed."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for root in map(Path, roots) for p in sorted(root.rglob("*"))}


PROGRESS = re.compile(r"\[\d\d:\d\d")  # a tqdm progress bar's elapsed time


def fails(main, script, argv, capsys, monkeypatch, after_work=False):
    """Runs main as `python script argv` would; asserts exit code 2 and returns the one line on stderr.

    after_work: the fault strikes after work that showed progress bars, which may come before the line.
    """
    monkeypatch.setattr(sys, "argv", [script, *map(str, argv)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 2
    *before, line = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert line.startswith(f"{script}: error: ")
    assert all(not text.strip() or PROGRESS.search(text) for text in before) if after_work else not before, before
    return line


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for one epoch (4 steps): (its directory, the flags that point at it)."""
    directory = tmp_path_factory.mktemp("faults")
    flags = corpus_flags(directory, toy_pairs(64, seed=1), toy_pairs(6, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    train.main(flags + TRAIN + ["--num_epochs", "1"])
    return directory, flags


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the trained directory that a test may damage: (its directory, its flags)."""
    directory, flags = trained
    shutil.copytree(directory, tmp_path / "copy")
    return tmp_path / "copy", [f.replace(str(directory), str(tmp_path / "copy")) for f in flags]


def flag(flags, name):
    return flags[flags.index(f"--{name}") + 1]


# Data loss

@pytest.mark.parametrize("out", ["logdir", "vocab_dir", ".", "parent", "full", "file"])
def test_export_never_replaces_what_it_did_not_write(trained, out, capsys, monkeypatch):
    directory, flags = trained
    monkeypatch.chdir(directory)
    (directory / "full").mkdir(exist_ok=True)
    (directory / "full" / "notes.txt").write_text("mine")
    (directory / "file").write_text("mine")
    target = {"logdir": flag(flags, "logdir"), "vocab_dir": flag(flags, "vocab_dir"), ".": ".",
              "parent": str(directory.parent), "full": "full", "file": "file"}[out]
    before = snapshot(directory)
    for overwrite in ([], ["--overwrite"]):  # --overwrite changes nothing here: none is export.py's
        line = fails(export.main, "export.py", flags + ["--out", target, *overwrite], capsys, monkeypatch)
        assert f"--out {target}" in line or f"{target} is not one" in line
    assert snapshot(directory) == before


def test_export_overwrite_replaces_only_its_own_savedmodel(trained, tmp_path, capsys, monkeypatch):
    _, flags = trained
    out = tmp_path / "exports" / "exported"  # inside a directory that does not exist yet
    export.main(flags + ["--out", str(out)])
    marker = json.loads((out / ct2.MARKER).read_text())
    assert marker["written_by"] == "export.py" and marker["name"].startswith("model_epoch_01")
    first = snapshot(out)
    line = fails(export.main, "export.py", flags + ["--out", out], capsys, monkeypatch)
    assert "exists and is not empty" in line and "--overwrite" in line
    assert snapshot(out) == first
    export.main(flags + ["--out", str(out), "--overwrite"])
    assert (out / ct2.MARKER).is_file() and (out / "saved_model.pb").is_file()
    assert sorted(os.listdir(out.parent)) == ["exported"]  # no temporary or old directory is left


# Files that belong together are written as one

def fail_on_call(monkeypatch, module, name, number, error):
    """Makes the number-th call of module.name raise error (the earlier ones run as usual)."""
    original, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_a_full_disk_while_prepro_writes_keeps_the_whole_old_vocab(trained, tmp_path, capsys, monkeypatch):
    directory, flags = trained
    vocab_dir = Path(flag(flags, "vocab_dir"))
    before = snapshot(vocab_dir)
    other = corpus_flags(tmp_path, toy_pairs(64, seed=5), toy_pairs(2, seed=2))[:4]  # another training text
    fail_on_call(monkeypatch, files.os, "fsync", 2, OSError(errno.ENOSPC, "No space left on device"))
    line = fails(prepro.main, "prepro.py", other + ["--vocab_dir", vocab_dir], capsys, monkeypatch, after_work=True)
    assert f"cannot write {vocab_dir / 'en.vocab.tsv'} (No space left on device)" in line
    assert snapshot(vocab_dir) == before  # the complete old set, and no temporary file


def test_a_vocab_set_mixed_by_a_kill_is_refused(trained, tmp_path):
    directory, flags = trained
    vocab_dir = tmp_path / "vocab"
    shutil.copytree(flag(flags, "vocab_dir"), vocab_dir)
    other = corpus_flags(tmp_path, toy_pairs(64, seed=5), toy_pairs(2, seed=2))[:4]
    replace = os.replace

    def killed_after_the_first_rename(src, dst):
        if dst.endswith(vocab.TGT_VOCAB):
            raise SystemExit("killed")
        replace(src, dst)

    os.replace = killed_after_the_first_rename
    try:
        with pytest.raises(SystemExit):
            prepro.main(other + ["--vocab_dir", str(vocab_dir)])
    finally:
        os.replace = replace
    hp = Hyperparams(vocab_dir=str(vocab_dir), min_cnt=1)
    with pytest.raises(UserError, match=r"de.vocab.tsv is not the file .*corpus.json lists .* run prepro.py"):
        vocab.load_vocabs(hp)


def test_a_full_disk_at_the_writability_check_leaves_no_probe(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    original = open

    def full(path, *args, **kwargs):  # the file is created, and then nothing fits
        f = original(path, *args, **kwargs)
        if ".write_test" in str(path):
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(UserError, match="cannot write to --results_dir .* \\(No space left on device\\)"):
        files.check_writable(str(tmp_path / "results"), "results_dir")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "results") == []


def test_eval_writes_its_results_and_their_json_both_or_neither(copy, capsys, monkeypatch):
    directory, flags = copy
    evaluate.main(flags)
    results = directory / "results"
    before = snapshot(results)
    assert len(before) == 2  # the results file and its .json
    fail_on_call(monkeypatch, files.os, "fsync", 2, OSError(errno.ENOSPC, "No space left on device"))
    line = fails(evaluate.main, "eval.py", flags, capsys, monkeypatch, after_work=True)
    assert ".json (No space left on device)" in line
    assert snapshot(results) == before


def test_a_full_disk_while_checkpointing_leaves_no_part_and_the_last_checkpoint(copy, capsys, monkeypatch):
    directory, flags = copy
    logdir = Path(flag(flags, "logdir"))
    write = tf.train.Checkpoint.write

    def disk_fills(self, path, *args, **kwargs):
        os.makedirs(path + "_temp")
        Path(path + "_temp", "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 100)
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}_temp/part; No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", disk_fills)
    before = sorted(os.listdir(logdir))
    line = fails(train.main, "train.py", flags + TRAIN + ["--num_epochs", "2"], capsys, monkeypatch, after_work=True)
    assert line.startswith("train.py: error: cannot write the checkpoint") and "No space left on device" in line
    after = sorted(n for n in os.listdir(logdir) if not n.startswith("events."))  # TensorBoard's own file
    assert after == sorted(n for n in before if not n.startswith("events."))
    monkeypatch.setattr(tf.train.Checkpoint, "write", write)
    assert checkpoints.latest(str(logdir)).endswith("model_epoch_01_gs_4")


# Silent wrong results become errors

@pytest.mark.parametrize("script", ["eval.py", "translate.py", "export.py", "plot_attention.py"])
def test_a_vocab_rebuilt_since_training_is_refused_everywhere(copy, tmp_path, script, capsys, monkeypatch):
    directory, flags = copy
    # the same words, so the same vocab size, in another order of frequency: other ids
    swapped = [(s, t) for s, t in toy_pairs(64, seed=1)] + [("zwoelf elf", "twelve eleven")] * 9
    rebuilt = corpus_flags(tmp_path, swapped, toy_pairs(2, seed=2))[:4]
    prepro.main(rebuilt + ["--vocab_dir", flag(flags, "vocab_dir")])
    main = {"eval.py": evaluate.main, "translate.py": translate.main, "export.py": export.main,
            "plot_attention.py": plot_attention.main}[script]
    own = {"translate.py": ["eins"], "export.py": ["--out", tmp_path / "x"],
           "plot_attention.py": ["--out", tmp_path / "a.png", "eins"]}.get(script, [])
    line = fails(main, script, flags + own, capsys, monkeypatch)
    assert "is not the one the model in" in line and "was trained with (it was rebuilt since)" in line


def test_a_corpus_with_no_word_after_refining_is_refused(tmp_path, capsys, monkeypatch):
    src = write_lines(tmp_path / "n.de", ["12 !", "3 - 4 ."])
    tgt = write_lines(tmp_path / "n.en", ["one", "two"])
    line = fails(prepro.main, "prepro.py", ["--source_train", src, "--target_train", tgt,
                                             "--vocab_dir", tmp_path / "v"], capsys, monkeypatch, after_work=True)
    assert f"{src}: no word is left once the text is refined" in line
    assert not (tmp_path / "v").exists()


def test_a_min_cnt_that_leaves_no_word_is_refused(trained, tmp_path):
    directory, flags = trained
    with pytest.raises(UserError, match=r"de.vocab.tsv: no word is seen at least --min_cnt 1000 times"):
        train.main(flags + TRAIN + ["--min_cnt", "1000", "--logdir", str(tmp_path / "l")])


@pytest.mark.parametrize("state", [b"garbage { not a state", None], ids=["garbage", "deleted"])
def test_a_damaged_checkpoint_list_resumes_from_the_newest_checkpoint(copy, state, capsys):
    directory, flags = copy
    logdir = Path(flag(flags, "logdir"))
    if state is None:
        (logdir / "checkpoint").unlink()
    else:
        (logdir / "checkpoint").write_bytes(state)
    train.main(flags + TRAIN + ["--num_epochs", "2"])
    out = capsys.readouterr()
    assert "note: " in out.err and "is missing or damaged; using the checkpoints found" in out.err  # a note: stderr
    out = out.out
    assert f"resuming from {logdir / 'model_epoch_01_gs_4'}" in out
    assert checkpoints.listed(str(logdir)) == ["model_epoch_01_gs_4", "model_epoch_02_gs_8"]


@pytest.mark.parametrize("state", [b"\xff\xfe", b"", b'model_checkpoint_path: "model_epoch_09_gs_99"\n'],
                         ids=["binary", "empty", "lists-a-deleted-one"])
def test_checkpoints_on_disk_are_found_whatever_the_list_says(tmp_path, state):
    for step in (30, 4, 12):  # by global step, not by name
        (tmp_path / f"model_epoch_0{step // 4}_gs_{step}.index").write_bytes(b"")
    (tmp_path / "checkpoint").write_bytes(state)
    assert checkpoints.listed(str(tmp_path)) == ["model_epoch_01_gs_4", "model_epoch_03_gs_12",
                                                 "model_epoch_07_gs_30"]
    assert checkpoints.latest(str(tmp_path)) == str(tmp_path / "model_epoch_07_gs_30")


@pytest.mark.parametrize("damage", ["index", "data"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(copy, damage, capsys, monkeypatch):
    directory, flags = copy
    logdir = Path(flag(flags, "logdir"))
    path = logdir / ("model_epoch_01_gs_4.index" if damage == "index" else
                     "model_epoch_01_gs_4.data-00000-of-00001")
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])  # cut off
    before = snapshot(logdir)
    line = fails(evaluate.main, "eval.py", flags, capsys, monkeypatch)
    assert f"{logdir / 'model_epoch_01_gs_4'} is damaged (" in line and "pass an earlier checkpoint with --ckpt" in line
    line = fails(train.main, "train.py", flags + TRAIN + ["--num_epochs", "2"], capsys, monkeypatch)
    assert f"{logdir / 'model_epoch_01_gs_4'} is damaged (" in line and "move its files" in line
    assert snapshot(logdir) == before


def test_hparams_json_that_is_a_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "logdir" / "hparams.json").mkdir(parents=True)
    line = fails(evaluate.main, "eval.py", ["--logdir", tmp_path / "logdir"], capsys, monkeypatch)
    assert "hparams.json is damaged (Is a directory); move it away and run train.py again" in line


def test_a_second_training_on_one_logdir_stops_and_a_killed_one_leaves_no_lock(trained, capsys, monkeypatch):
    directory, flags = trained
    logdir = flag(flags, "logdir")
    with checkpoints.exclusive(logdir):
        line = fails(train.main, "train.py", flags + TRAIN + ["--num_epochs", "2"], capsys, monkeypatch)
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


# Clean stderr

def test_a_user_mistake_prints_exactly_one_line_with_no_tensorflow_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # nothing set by hand
    result = subprocess.run([sys.executable, str(ROOT / "prepro.py"), "--source_train", "/nonexistent.de",
                             "--target_train", "/nonexistent.en", "--vocab_dir", tmp_path / "v"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and \
        result.stderr.startswith("prepro.py: error: /nonexistent.de not found")


def test_startup_filter_keeps_what_matters():
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1.0 2125 port.cc:153] oneDNN custom operations are on. You may see ...\n"
             "I0000 00:00:1.0 2125 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n"
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow ...\n")
    cuinit = "E0000 00:00:1.0 2137 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"
    no_driver = "I0000 00:00:1.0 2125 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
    assert cli.startup_lines_worth_showing(noise + no_driver + cuinit) == []  # no GPU here: no news
    assert cli.startup_lines_worth_showing(noise + cuinit) == [cuinit]  # a driver, yet no GPU: shown
    assert cli.startup_lines_worth_showing(noise + "E0000 something else broke") == ["E0000 something else broke"]

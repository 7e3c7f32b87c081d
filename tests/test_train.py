"""train.py: the loop (optimizer steps, resuming, --max_steps, --patience, a diverging loss), and that it learns."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import data_load
import eval as evaluate
import hyperparams
import prepro
import shards
import train
from cli import parse_args
from conftest import (ROOT, SESSION_BATCH, SESSION_STEPS, TINY_MODEL, corpus_flags,
                      decoders_on_test_set, toy_pairs, with_logdir)
from hyperparams import Hyperparams
from messages import UserError


@pytest.mark.e2e
def test_max_steps_ends_training_mid_epoch(controls_corpus, capsys):
    directory, flags = controls_corpus
    flags = with_logdir(flags, directory / "steps") + ["--num_epochs", "5", "--max_steps", "7"]
    train.main(flags)
    assert "reached --max_steps 7: training ends" in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(directory / "steps")).endswith("model_epoch_01_gs_7")
    train.main(flags)
    assert "has reached --max_steps 7; raise it to train on" in capsys.readouterr().out


@pytest.mark.e2e
def test_patience_stops_training_when_dev_bleu_stops_rising(controls_corpus, capsys):
    directory, flags = controls_corpus
    dev = ["--source_dev", str(directory / "test.de"), "--target_dev", str(directory / "test.en")]
    flags = with_logdir(flags, directory / "patience") + dev + [
        "--num_epochs", "6", "--dev_eval", "true", "--patience", "2", "--lr", "1e-12"]  # nothing is learnt
    train.main(flags)
    out = capsys.readouterr().out
    assert "no better dev BLEU in the last 2 evaluations" in out and "--patience 2 ends training" in out
    assert tf.train.latest_checkpoint(str(directory / "patience")).endswith("model_epoch_03_gs_60")
    train.main(flags)
    assert "training stopped early: no better dev BLEU in 2 evaluations" in capsys.readouterr().out


def test_a_resumed_run_names_the_settings_of_its_course_that_change(tmp_path):
    cosine = dict(logdir=str(tmp_path), lr_schedule="cosine", lr_scale=1.0, num_epochs=13)
    assert train.course_changes(Hyperparams(**cosine)) == []  # nothing to resume
    hyperparams.save(Hyperparams(**cosine))
    assert train.course_changes(Hyperparams(**cosine, summary_every=7, lr=0.5)) == []  # not read by cosine
    assert train.course_changes(Hyperparams(**{**cosine, "lr_scale": 0.7, "num_epochs": 15})) == [
        "lr_scale 1.0 -> 0.7", "num_epochs 13 -> 15"]  # the cosine's peak, and the end it falls to
    constant = dict(logdir=str(tmp_path / "constant"), num_epochs=2)
    hyperparams.save(Hyperparams(**constant))
    assert train.course_changes(Hyperparams(**{**constant, "num_epochs": 3})) == []  # training on, same rate
    assert train.course_changes(Hyperparams(**constant, lr=0.5, seed=7)) == ["lr 0.0001 -> 0.5", "seed 42 -> 7"]
    assert train.course_changes(Hyperparams(**constant, lr_schedule="cosine")) == [
        "lr_schedule 'constant' -> 'cosine'"]


@pytest.mark.e2e
def test_resume_continues_epoch_and_global_step(trained_model):
    _, flags = trained_model
    steps = SESSION_STEPS
    logdir = flags[flags.index("--logdir") + 1]
    events = tf.compat.v1.train.summary_iterator  # reads the TensorBoard event files
    points = {}
    for name in os.listdir(logdir):
        if name.startswith("events.out"):
            for event in events(os.path.join(logdir, name)):
                for value in event.summary.value:
                    points.setdefault(value.tag, []).append(event.step)
    assert set(points) >= {"mean_loss", "acc", "lr"}
    assert sorted(points["mean_loss"]) == [5, 10, 12, 15, 20, 24]  # two runs, no step repeated
    assert max(points["mean_loss"]) == 2 * steps


@pytest.mark.e2e
def test_same_seed_same_weights(trained_model, tmp_path):
    _, flags = trained_model
    weights = []
    for run in ("a", "b"):
        logdir = tmp_path / run
        train.main(flags + TINY_MODEL + SESSION_BATCH + ["--logdir", str(logdir), "--num_epochs", "1",
                                                "--dropout_rate", "0.1"])
        path = tf.train.latest_checkpoint(str(logdir))
        weights.append({n: tf.train.load_variable(path, n) for n, _ in tf.train.list_variables(path)
                        if n.startswith("model/")})
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert (weights[0][name] == weights[1][name]).all(), name


@pytest.mark.e2e
def test_settings_are_saved_with_the_model(trained_model):
    _, flags = trained_model
    saved = json.load(open(os.path.join(flags[flags.index("--logdir") + 1], "hparams.json")))
    assert saved["hparams"]["hidden_units"] == 32 and saved["hparams"]["num_epochs"] == 2
    assert saved["command"][0] == "train.py" and saved["command"][-2:] == ["--num_epochs", "2"]


@pytest.mark.e2e
def test_train_without_vocab_says_to_run_prepro(trained_model, tmp_path):
    _, flags = trained_model
    with pytest.raises(UserError, match="de.vocab.tsv not found; run prepro.py first"):
        train.main(flags + TINY_MODEL + ["--vocab_dir", str(tmp_path / "none"), "--logdir", str(tmp_path)])


@pytest.mark.e2e
def test_training_with_length_buckets(tmp_path):
    flags = corpus_flags(tmp_path, toy_pairs(120, seed=1), toy_pairs(10, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    train.main(flags + TINY_MODEL + ["--batch_tokens", "64", "--num_epochs", "1"])
    hp = hyperparams.Hyperparams(**parse_args(flags, description="")[0])
    lengths = shards.histogram(shards.shard_manifest(hp)["shards"])
    steps = data_load.count_batches(lengths, maxlen=hp.maxlen, batch_size=hp.batch_size, batch_tokens=64)
    assert steps > 120 // hp.batch_size  # short sentences: more, smaller batches
    assert os.path.basename(tf.train.latest_checkpoint(hp.logdir)) == f"model_epoch_01_gs_{steps}"


def checkpoint_files(logdir):
    return sorted(n for n in os.listdir(logdir) if n.startswith("model_") or n == "checkpoint")


@pytest.mark.e2e
def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(small_corpus, tmp_path):
    flags = small_corpus
    logdir = tmp_path / "logdir"
    train.main(flags + ["--num_epochs", "1"])
    before = {n: (logdir / n).stat().st_mtime_ns for n in checkpoint_files(logdir)}
    # Without Adam's epsilon, weights whose gradient is always zero (the <PAD> embedding row)
    # get 0/0 = NaN updates, and the loss is NaN from the next step on.
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, "--num_epochs", "3",
                             "--adam_epsilon", "0", "--summary_every", "1"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"train.py: error: the training loss became NaN or Inf at step 6; .*model_epoch_01_gs_4 "
                     r"is the last good checkpoint, untouched; lower --lr", result.stderr.splitlines()[-1])
    assert {n: (logdir / n).stat().st_mtime_ns for n in checkpoint_files(logdir)} == before


# Dropout stays on: a resumed run must also continue the dropout random state; so must the moving
# average of the weights and gradient accumulation (two batches per step).
MODEL = ["--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--dropout_rate", "0.1",
         "--batch_size", "16", "--num_epochs", "2", "--save_every", "3", "--keep_checkpoints", "50",
         "--ema_decay", "0.99", "--accumulate", "2"]

PAIRS = 480  # 30 batches, 15 steps per epoch


@pytest.fixture(scope="module")
def interrupt_corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interrupt")
    flags = corpus_flags(tmp, toy_pairs(PAIRS, seed=1), toy_pairs(8, seed=2)) + ["--maxlen", "10"] + MODEL
    prepro.main(flags)
    return tmp, [f for f in flags if f != str(tmp / "logdir")]  # each test picks its --logdir


def start_training(flags, logdir):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *flags, "--logdir", str(logdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_weights(logdir):
    reader = tf.train.load_checkpoint(str(logdir))
    path = tf.train.latest_checkpoint(str(logdir))
    names = [n for n, _ in tf.train.list_variables(path) if n.startswith(("model/", "optimizer/", "rng/"))]
    return os.path.basename(path), {n: reader.get_tensor(n) for n in names}


@pytest.fixture(scope="module")
def uninterrupted(interrupt_corpus):
    tmp, flags = interrupt_corpus
    flags = [f for f in flags if f != "--logdir"]
    run = start_training(flags, tmp / "whole")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-2000:]
    return final_weights(tmp / "whole")


def wait_for_checkpoint(logdir, process, timeout=120):
    """Waits until a first mid-epoch checkpoint is complete; returns its name."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        latest = tf.train.latest_checkpoint(str(logdir)) if (logdir / "checkpoint").exists() else None
        if latest:
            return os.path.basename(latest)
        assert process.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.e2e  # trains in processes it starts and stops
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_run_resumes_to_the_same_weights(interrupt_corpus, uninterrupted, how):
    tmp, flags = interrupt_corpus
    flags = [f for f in flags if f != "--logdir"]
    logdir = tmp / how.name
    first = start_training(flags, logdir)
    wait_for_checkpoint(logdir, first)
    assert first.poll() is None  # still training
    first.send_signal(how)
    out, err = first.communicate(timeout=120)
    if how == signal.SIGKILL:
        assert first.returncode == -signal.SIGKILL
    else:  # finishes its step, saves, says how to resume, exits cleanly
        assert first.returncode == 0, err[-2000:]
        stopped = re.search(r"SIGTERM at step (\d+): saved (\S+); run the same command to resume", out)
        assert stopped and stopped[2].endswith(f"_gs_{stopped[1]}")
    saved = os.path.basename(tf.train.latest_checkpoint(str(logdir)))
    step = int(saved.rsplit("_", 1)[1])
    assert 0 < step < 2 * PAIRS // 16  # stopped before the end

    second = start_training(flags, logdir)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert f"resuming from {logdir / saved}" in out
    name, weights = final_weights(logdir)
    expected_name, expected = uninterrupted
    assert name == expected_name
    assert weights.keys() == expected.keys()
    for key in expected:  # exactly: same batches, same dropout masks, same arithmetic
        np.testing.assert_array_equal(weights[key], expected[key], err_msg=key)


@pytest.mark.e2e
def test_tiny_model_learns_to_translate_and_reverse(tmp_path):
    # English = the German number words translated one by one, in reverse order;
    # held-out test sentences never occur in training.
    train_pairs = toy_pairs(2000, seed=1, reverse=True)
    seen = set(train_pairs)
    test_pairs = [p for p in toy_pairs(100, seed=2, reverse=True) if p not in seen]
    flags = corpus_flags(tmp_path, train_pairs, test_pairs) + ["--maxlen", "10", "--seed", "3"]
    prepro.main(flags)
    train.main(flags + ["--hidden_units", "64", "--num_blocks", "1", "--num_heads", "4",
                        "--dropout_rate", "0", "--lr", "0.003", "--num_epochs", "6"])
    evaluate.main(flags)
    name = next(p.name for p in (tmp_path / "results").iterdir() if p.suffix != ".json")
    results = (tmp_path / "results" / name).read_text()
    assert results.count("- got: ") == len(test_pairs)
    bleu = float(re.search(r"Bleu Score = (\S+)\n\Z", results)[1])
    assert bleu > 50
    full, cached, beam_one = decoders_on_test_set(flags)  # the cached decoder eval.py uses, the reference ...
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_array_equal(beam_one, full)  # ... and beam search of beam size 1
    evaluate.main(flags + ["--beam_size", "4"])
    beam = (tmp_path / "results" / (name + "_beam4")).read_text()
    assert float(re.search(r"Bleu Score = (\S+)\n\Z", beam)[1]) >= bleu - 1


@pytest.mark.e2e
def test_resuming_with_another_shape_corpus_or_vocab_is_refused(tmp_path, capsys, monkeypatch):
    import prepro
    import train
    from conftest import TINY_MODEL, corpus_flags, fails, toy_pairs
    first = corpus_flags(tmp_path / "a", toy_pairs(40, seed=1), toy_pairs(4, seed=2))
    shared = ["--vocab_dir", str(tmp_path / "vocab"), "--logdir", str(tmp_path / "logdir")]
    prepro.main(first + shared)
    train.main(first + shared + TINY_MODEL + ["--batch_size", "8", "--num_epochs", "1"])

    def refused(argv):  # as `python train.py argv` ends: the one line on stderr, exit code 2
        return fails(train.main, "train.py", argv, capsys, monkeypatch)

    wider = [v if v != "32" else "64" for v in TINY_MODEL]  # --hidden_units 64
    line = refused([*first, *shared, *wider, "--batch_size", "8", "--num_epochs", "2"])
    assert "holds a model trained with other settings (hidden_units: 32 != 64)" in line

    second = corpus_flags(tmp_path / "b", toy_pairs(40, seed=3), toy_pairs(4, seed=2)) + shared
    line = refused([*second, *TINY_MODEL, "--batch_size", "8"])
    assert f"the vocab in {tmp_path / 'vocab'} was built from {tmp_path / 'a' / 'train.de'}" in line
    assert "run prepro.py with these settings" in line

    prepro.main(second)  # rebuilt from the second corpus, while logdir holds a model of the first vocab
    line = refused([*second, *TINY_MODEL, "--batch_size", "8", "--num_epochs", "2"])
    assert "is not the one the model in" in line and "(it was rebuilt since)" in line

"""train.py killed or stopped mid-epoch resumes where it stopped and ends with the uninterrupted run's weights."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import prepro
from conftest import ROOT, corpus_flags, toy_pairs

# Dropout stays on: a resumed run must also continue the dropout random state; so must the moving
# average of the weights and gradient accumulation (two batches per step).
MODEL = ["--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--dropout_rate", "0.1",
         "--batch_size", "16", "--num_epochs", "2", "--save_every", "3", "--keep_checkpoints", "50",
         "--ema_decay", "0.99", "--accumulate", "2"]
PAIRS = 480  # 30 batches, 15 steps per epoch


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interrupt")
    flags = corpus_flags(tmp, toy_pairs(PAIRS, seed=1), toy_pairs(8, seed=2)) + ["--maxlen", "10"] + MODEL
    prepro.main(flags)
    return tmp, [f for f in flags if f != str(tmp / "logdir")]  # each test picks its --logdir


def train(flags, logdir):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *flags, "--logdir", str(logdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_weights(logdir):
    reader = tf.train.load_checkpoint(str(logdir))
    path = tf.train.latest_checkpoint(str(logdir))
    names = [n for n, _ in tf.train.list_variables(path) if n.startswith(("model/", "optimizer/", "rng/"))]
    return os.path.basename(path), {n: reader.get_tensor(n) for n in names}


@pytest.fixture(scope="module")
def uninterrupted(corpus):
    tmp, flags = corpus
    flags = [f for f in flags if f != "--logdir"]
    run = train(flags, tmp / "whole")
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


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_run_resumes_to_the_same_weights(corpus, uninterrupted, how):
    tmp, flags = corpus
    flags = [f for f in flags if f != "--logdir"]
    logdir = tmp / how.name
    first = train(flags, logdir)
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

    second = train(flags, logdir)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert f"resuming from {logdir / saved}" in out
    name, weights = final_weights(logdir)
    expected_name, expected = uninterrupted
    assert name == expected_name
    assert weights.keys() == expected.keys()
    for key in expected:  # exactly: same batches, same dropout masks, same arithmetic
        np.testing.assert_array_equal(weights[key], expected[key], err_msg=key)

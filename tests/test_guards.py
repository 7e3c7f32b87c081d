"""Training stops cleanly on a diverging loss and never resumes from a checkpoint that was cut off."""
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

import prepro
import train
from conftest import ROOT, TINY_MODEL, corpus_flags, toy_pairs


@pytest.fixture
def flags(tmp_path):
    flags = corpus_flags(tmp_path, toy_pairs(64, seed=1), toy_pairs(4, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    return flags + TINY_MODEL + ["--batch_size", "16"]


def checkpoint_files(logdir):
    return sorted(n for n in os.listdir(logdir) if n.startswith("model_") or n == "checkpoint")


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(flags, tmp_path):
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


def test_a_checkpoint_cut_off_while_written_is_never_resumed(flags, tmp_path, monkeypatch):
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

"""train.py under tf.distribute: two logical CPU devices (mirrored) and two worker processes (multiworker)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import prepro
from conftest import ROOT, TINY_MODEL, corpus_flags, toy_pairs

pytestmark = pytest.mark.e2e  # trains a model on two devices, or in two processes

# Starts train.py in a fresh process, after splitting the CPU into argv[1] logical devices
# (possible only before TensorFlow initialises, hence the separate process).
LAUNCH = """
import sys
import tensorflow as tf
devices = int(sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
sys.argv = ["train.py", *sys.argv[2:]]
import cli
import train
cli.run(train.main)
"""


def start_training(devices, flags, cwd, env=None):
    return subprocess.Popen([sys.executable, "-c", LAUNCH, str(devices), *flags], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out


def losses(logdir, tag="mean_loss"):
    """A scalar's TensorBoard points of a run, in step order."""
    points = {}
    for name in os.listdir(logdir):
        if name.startswith("events.out"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
                for value in event.summary.value:
                    if value.tag == tag:
                        points[event.step] = float(tf.make_ndarray(value.tensor))
    return [points[step] for step in sorted(points)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distribute")
    flags = corpus_flags(tmp, toy_pairs(160, seed=1), toy_pairs(8, seed=2)) + ["--maxlen", "10", "--shard_pairs", "40"]
    prepro.main(flags)
    return tmp, flags + TINY_MODEL + ["--batch_size", "16", "--num_epochs", "1", "--summary_every", "1"]


def test_mirrored_on_two_devices_follows_the_one_device_run(corpus):
    tmp, flags = corpus
    single = start_training(1, flags + ["--logdir", str(tmp / "single")], tmp)
    mirrored = start_training(2, flags + ["--logdir", str(tmp / "mirrored"), "--strategy", "mirrored"], tmp)
    assert "1 replica(s)" in finish(single)
    assert "2 replica(s)" in finish(mirrored)
    expected = losses(tmp / "single")
    assert len(expected) == 160 // 16
    np.testing.assert_allclose(losses(tmp / "mirrored"), expected, rtol=1e-4)
    # the norm of the whole batch's gradient, not of one replica's share
    np.testing.assert_allclose(losses(tmp / "mirrored", "grad_norm"), losses(tmp / "single", "grad_norm"), rtol=1e-3)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_and_only_the_chief_writes(corpus):
    tmp, flags = corpus
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    logdir = tmp / "multiworker"
    workers = [start_training(1, flags + ["--logdir", str(logdir), "--strategy", "multiworker"], tmp,
                              env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                            "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    outputs = [finish(w) for w in workers]
    assert all("2 replica(s)" in out for out in outputs)
    assert [f"worker {i} reads 2 of 4 id shards" in out for i, out in enumerate(outputs)] == [True, True]
    names = sorted(os.listdir(logdir))
    assert [n for n in names if n.endswith(".index")] == [f"model_epoch_01_gs_{160 // 16}.index"]
    assert not [n for n in names if n.startswith(".worker")]  # the other worker's scratch copy is gone
    assert len(losses(logdir)) == 160 // 16  # summaries come from the chief alone

"""Shared helpers: fixture files, tiny settings, a synthetic translation task, and the session's trained model."""
import contextlib
import fcntl
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small enough that a few epochs take seconds on two CPU cores.
TINY_MODEL = ["--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--dropout_rate", "0.0"]

# A toy language pair: each German number word has one English translation.
GERMAN = "eins zwei drei vier fuenf sechs sieben acht neun zehn elf zwoelf".split()
ENGLISH = "one two three four five six seven eight nine ten eleven twelve".split()
DICTIONARY = dict(zip(GERMAN, ENGLISH))


def write_lines(path, lines):
    """Writes lines as UTF-8 text (gzip when the name ends in .gz); returns the path as str."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def toy_pairs(count, seed, reverse=False, lengths=(4, 7)):
    """Random German sentences of number words and their word-by-word translations.

    With reverse, the English side is also in reverse order, so the model must
    learn positions as well as words.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = [rng.choice(GERMAN) for _ in range(rng.randint(*lengths))]
        english = [DICTIONARY[w] for w in words]
        pairs.append((" ".join(words), " ".join(english[::-1] if reverse else english)))
    return pairs


def corpus_flags(directory, train_pairs, test_pairs):
    """Writes a train/test corpus under `directory`; returns the flags that point every script at it."""
    flags = []
    for split, pairs in (("train", train_pairs), ("test", test_pairs)):
        flags += [f"--source_{split}", write_lines(directory / f"{split}.de", [s for s, _ in pairs]),
                  f"--target_{split}", write_lines(directory / f"{split}.en", [t for _, t in pairs])]
    return flags + ["--vocab_dir", str(directory / "vocab"), "--logdir", str(directory / "logdir"),
                    "--results_dir", str(directory / "results"), "--min_cnt", "1"]


def decoders_on_test_set(flags):
    """Output on every test sentence, for the model trained with `flags`, of both greedy decoders
    and of beam search with beam size 1 (its best hypothesis)."""
    import engines
    import hyperparams
    from cli import parse_args
    from decoding import beam_search_decoder, cached_greedy_decoder, decode_limits, greedy_decoder
    from inference import load_trained, source_batch

    hp = hyperparams.for_evaluation(parse_args(flags, description="")[0])
    trained = load_trained(hp)
    model = trained.model
    sources, _ = engines.test_pairs(hp, trained.src_vocab, trained.tgt_vocab, keep_all=True)
    src = source_batch(engines.encode(trained.src_vocab, sources, hp))
    limits = decode_limits(src, hp)
    beam_one = beam_search_decoder(model, 1, hp.length_penalty)(src, limits)[0][:, 0]
    return tuple(out.numpy() for out in (greedy_decoder(model)(src, limits), cached_greedy_decoder(model)(src, limits),
                                         beam_one))


# The session's tiny model: 200 toy pairs, 16 per batch (12 steps an epoch), two epochs, the second
# resumed from the first one's checkpoint; 37 test pairs (a partial last batch).
SESSION_PAIRS, SESSION_TEST, SESSION_BATCH = 200, 37, ["--batch_size", "16"]
SESSION_TRAIN = TINY_MODEL + SESSION_BATCH + ["--summary_every", "5"]


@contextlib.contextmanager
def locked(path):
    """Within `with`, this process alone holds the lock file at path (the test workers share the model)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, worker_id):
    """One tiny model for the whole session, trained once for all test workers: (its directory, the flags that
    point every script at it). Read-only: a test that writes into it takes trained_copy instead."""
    import prepro
    import train

    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base  # under xdist, the workers' directories share a parent
    directory = root / "session_model"
    flags = corpus_flags(directory, toy_pairs(SESSION_PAIRS, seed=1), toy_pairs(SESSION_TEST, seed=2)) + [
        "--maxlen", "10"]
    with locked(root / "session_model.lock"):
        if not (directory / "complete").exists():
            prepro.main(flags)
            train.main(flags + SESSION_TRAIN + ["--num_epochs", "1"])
            train.main(flags + SESSION_TRAIN + ["--num_epochs", "2"])  # resumes
            (directory / "complete").touch()
    return directory, flags


@pytest.fixture
def trained_copy(trained_model, tmp_path):
    """A copy of the session's model that a test may change or damage: (its directory, its flags)."""
    directory, flags = trained_model
    shutil.copytree(directory, tmp_path / "copy")
    return tmp_path / "copy", [f.replace(str(directory), str(tmp_path / "copy")) for f in flags]


class Server:
    """serve.py in a process of its own, on a free port; .url once it listens."""

    def __init__(self, *argv):
        self.process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), *argv, "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        deadline = time.time() + 180
        while time.time() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise AssertionError("serve.py ended: " + "".join(self.lines) + self.process.stderr.read())
            self.lines.append(line)
            found = re.search(r"serving .* on (http://\S+)", line)
            if found:
                self.url = found[1]
                return
        raise AssertionError("serve.py did not start: " + "".join(self.lines))

    def stop(self, sig=signal.SIGTERM):
        """Sends sig; returns (exit code, the rest of stderr)."""
        self.process.send_signal(sig)
        rest = self.process.communicate(timeout=60)[1]
        return self.process.returncode, "".join(self.lines) + rest


def post(url, body, raw=None):
    """(status, JSON answer, headers) of a POST with a JSON body (or raw bytes)."""
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.read().decode("utf-8")

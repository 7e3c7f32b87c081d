"""Shared helpers: fixture files, tiny settings, a synthetic translation task, and the session's trained model."""
import contextlib
import fcntl
import gzip
import hashlib
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import pytest
import tensorflow as tf

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
    for split, pairs in (("train", train_pairs), ("test", test_pairs)):
        write_lines(directory / f"{split}.de", [s for s, _ in pairs])
        write_lines(directory / f"{split}.en", [t for _, t in pairs])
    return directory_flags(directory)


def directory_flags(directory):
    """The flags that point every script at the corpus corpus_flags() wrote in `directory`."""
    flags = []
    for split in ("train", "test"):
        flags += [f"--source_{split}", str(directory / f"{split}.de"),
                  f"--target_{split}", str(directory / f"{split}.en")]
    return flags + ["--vocab_dir", str(directory / "vocab"), "--logdir", str(directory / "logdir"),
                    "--results_dir", str(directory / "results"), "--min_cnt", "1"]


def decoders_on_test_set(flags):
    """Output on every test sentence, for the model trained with `flags`, of both greedy decoders
    and of beam search with beam size 1 (its best hypothesis)."""
    import readers
    import hyperparams
    from cli import parse_args
    from decoding import beam_search_decoder, cached_greedy_decoder, decode_limits, greedy_decoder
    from engine import encode
    from inference import load_trained, source_batch

    hp = hyperparams.for_evaluation(parse_args(flags, description="")[0])
    trained = load_trained(hp)
    model = trained.model
    sources, _ = readers.evaluation_pairs(hp, trained.src_vocab, trained.tgt_vocab, keep_all=True)
    src = source_batch(encode(trained.src_vocab, sources, hp))
    limits = decode_limits(src, hp)
    beam_one = beam_search_decoder(model, 1, hp.length_penalty)(src, limits)[0][:, 0]
    return tuple(out.numpy() for out in (greedy_decoder(model)(src, limits), cached_greedy_decoder(model)(src, limits),
                                         beam_one))


# The session's tiny model: 200 toy pairs, 16 per batch (12 steps an epoch), two epochs, the second
# resumed from the first one's checkpoint; 37 test pairs (a partial last batch).
SESSION_PAIRS, SESSION_TEST, SESSION_BATCH = 200, 37, ["--batch_size", "16"]

SESSION_STEPS = SESSION_PAIRS // 16  # steps an epoch
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

    def make(directory):
        flags = corpus_flags(directory, toy_pairs(SESSION_PAIRS, seed=1), toy_pairs(SESSION_TEST, seed=2)) + [
            "--maxlen", "10"]
        prepro.main(flags)
        train.main(flags + SESSION_TRAIN + ["--num_epochs", "1"])
        train.main(flags + SESSION_TRAIN + ["--num_epochs", "2"])  # resumes

    directory = shared_once(tmp_path_factory, worker_id, "session_model", make)
    return directory, directory_flags(directory) + ["--maxlen", "10"]


@pytest.fixture(scope="session")
def session_translations(trained_model, tmp_path_factory, worker_id):
    """eval.py's translations of the session model's whole test set, as its results file lists them."""
    _, flags = trained_model

    def make(results):
        import eval as evaluate
        evaluate.main(flags + ["--all", "--results_dir", str(results)])

    results = shared_once(tmp_path_factory, worker_id, "session_results", make)
    [written] = [p for p in results.iterdir() if p.suffix != ".json" and p.name != "complete"]
    return re.findall(r"- got: (.*)\n", written.read_text(encoding="utf-8"))


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


# Helpers of the tests that break things
def snapshot(*roots):
    """Every path under the roots, with the sha256 of each file: equal snapshots mean nothing changed. (A
    logdir's .lock names the last process that trained there, so only its presence counts.)"""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and p.name != ".lock" else "dir"
            for root in map(Path, roots) for p in sorted(root.rglob("*"))}


PROGRESS = re.compile(r"\[\d\d:\d\d")  # a tqdm progress bar's elapsed time


def fails(main, script, argv, capsys, monkeypatch, after_work=False):
    """Runs main as `python script argv` would; asserts exit code 2 and returns the one line on stderr, its last.

    after_work: the fault strikes after work that showed progress bars, which may come before the line (each
    ended by a newline: the error line stands alone).
    """
    import cli

    monkeypatch.setattr(sys, "argv", [script, *map(str, argv)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main)
    assert exit_info.value.code == 2
    *before, line = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{script}: error: ")
    assert all(not text.strip() or PROGRESS.search(text) for text in before) if after_work else not before, before
    return line


def flag(flags, name):
    return flags[flags.index(f"--{name}") + 1]


def fail_on_call(monkeypatch, module, name, number, error):
    """Makes the number-th call of module.name raise error (the earlier ones run as usual)."""
    original, calls = getattr(module, name), []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


# A small untrained model and two batches of one width with different numbers of target words (7 and 4)
SMALL = dict(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=8)

TWO_SRC = [tf.constant([[4, 5, 6, 3], [7, 8, 3, 0]]), tf.constant([[9, 3, 0, 0], [5, 6, 7, 3]])]

TWO_TGT = [tf.constant([[4, 9, 10, 3], [6, 7, 3, 0]]), tf.constant([[8, 3, 0, 0], [5, 3, 0, 0]])]


def fresh_model(**settings):
    """A model of SMALL's shape (and the settings given), the same initial weights every time."""
    import keras

    from hyperparams import Hyperparams
    from model import build_model

    keras.utils.set_random_seed(0)
    return build_model(Hyperparams(**{**SMALL, **settings}), 11, 13)


def values(model):
    return [v.numpy() for v in model.trainable_variables]


def with_logdir(flags, logdir):
    return [*flags[:flags.index("--logdir")], *flags[flags.index("--logdir") + 2:], "--logdir", str(logdir)]


def shared_once(tmp_path_factory, worker_id, name, make):
    """make(directory) run once for the whole session, whatever the test workers: returns the directory."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if worker_id != "master" else base  # under xdist, the workers' directories share a parent
    with locked(root / f"{name}.lock"):
        if not (root / name / "complete").exists():
            shutil.rmtree(root / name, ignore_errors=True)
            make(root / name)
            (root / name / "complete").touch()
    return root / name


@pytest.fixture(scope="session")
def controls_corpus(tmp_path_factory, worker_id):
    """A toy corpus of 320 pairs (20 batches of 16 an epoch) with its vocab: (directory, flags); tests train in
    logdirs of their own."""
    def make(directory):
        import prepro
        prepro.main(corpus_flags(directory, toy_pairs(320, seed=1), toy_pairs(12, seed=2)) + ["--maxlen", "10"])

    directory = shared_once(tmp_path_factory, worker_id, "controls", make)
    return directory, directory_flags(directory) + ["--maxlen", "10", *TINY_MODEL, "--batch_size", "16"]


@pytest.fixture(scope="session")
def averaged_model(controls_corpus, tmp_path_factory, worker_id):
    """A model trained two epochs with --ema_decay, 2 batches per step, and a cosine schedule: its flags."""
    directory, flags = controls_corpus
    flags = with_logdir(flags, directory / "ema") + ["--num_epochs", "2", "--ema_decay", "0.9", "--accumulate",
                                                     "2", "--lr_schedule", "cosine", "--warmup_steps", "4",
                                                     "--lr_scale", "0.1"]

    def make(marker_directory):
        import train
        marker_directory.mkdir()
        train.main(flags)

    shared_once(tmp_path_factory, worker_id, "controls_ema_done", make)
    return flags


@pytest.fixture(scope="session")
def second_model(controls_corpus, tmp_path_factory, worker_id):
    """Another model on the same vocab, of another width: its logdir."""
    directory, flags = controls_corpus
    flags = with_logdir(flags, directory / "second") + ["--num_epochs", "1", "--hidden_units", "16", "--seed", "7"]

    def make(marker_directory):
        import train
        marker_directory.mkdir()
        train.main(flags)

    shared_once(tmp_path_factory, worker_id, "controls_second_done", make)
    return directory / "second"


# The scripts as users run them
def run_script(script, *args, cwd):
    """The script as a user runs it: its CompletedProcess."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.startswith(("prepro.py", "train.py", "eval.py"))]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def random_pairs(count, maxlen, seed, shortest=1):
    """count padded pairs (count, maxlen) x2 of random lengths shortest..maxlen; row i holds the
    value i + 4 on both sides, so that a batch row tells which pair it is."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x, y = np.full((2, count, maxlen), 0, np.int32)  # <PAD>
    for i, (a, b) in enumerate(rng.integers(shortest, maxlen + 1, (count, 2))):
        x[i, :a], y[i, :b] = i + 4, i + 4
    return x, y


@pytest.fixture
def small_corpus(tmp_path):
    """A toy corpus of 64 pairs with its vocab in tmp_path (4 batches of 16 an epoch): the flags to train on it."""
    import prepro

    flags = corpus_flags(tmp_path, toy_pairs(64, seed=1), toy_pairs(4, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    return flags + TINY_MODEL + ["--batch_size", "16"]

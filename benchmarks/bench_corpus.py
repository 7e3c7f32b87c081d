"""Large-corpus check: prepro.py and train.py's first steps on a corpus of --pairs pairs, time and peak memory.

The corpus is Multi30k's training text repeated until it has --pairs pairs
(python download.py multi30k first). Each stage runs as a fresh process of
the scripts in --code (this directory by default; another checkout measures
another version with the same flags), and prints one JSON line:

    prepro: seconds, peak_rss_mb
    train:  seconds to the first finished step, target tokens per second
            after the first 20 steps (train.py's own TensorBoard figure),
            peak_rss_mb, for --steps steps of a small model (64 wide, subword
            vocab, maxlen 64, 2,048-token batches); then SIGTERM ends it

    python -m benchmarks.bench_corpus --pairs 1000000
"""
import gzip
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

if __package__ in (None, ""):  # run as a file: the pipeline's modules are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli
from cli import Parser, run
from benchmarks import ROOT
from messages import UserError
from corpora import corpus_paths

VOCAB = ["--vocab_type", "subword", "--vocab_size", "8000"]
SUMMARY_EVERY = 20
MODEL = ["--maxlen", "64", "--hidden_units", "64", "--num_blocks", "2", "--num_heads", "4", "--batch_tokens", "2048",
         "--num_epochs", "1", "--summary_every", str(SUMMARY_EVERY), "--keep_checkpoints", "1"]
PROGRESS = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "123/4567 [" in train.py's progress bar


def write_corpus(directory, pairs):
    """train.de and train.en: Multi30k's training pairs, repeated until there are `pairs` of them."""
    sides = []
    for path in corpus_paths("multi30k", "train"):
        if not os.path.isfile(path):
            raise UserError(f"{path} not found; run python download.py multi30k first")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            sides.append(f.read().splitlines())
    paths = [os.path.join(directory, f"train.{lang}") for lang in ("de", "en")]
    for path, lines in zip(paths, sides):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in itertools.islice(itertools.cycle(lines), pairs))
    return paths


def run_stage(argv, on_stderr=None):
    """Runs argv; returns (seconds, peak resident MB, exit code). on_stderr(text, process) sees stderr as it comes."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1)
    tail = []

    def read():
        for chunk in iter(lambda: process.stderr.read(256), ""):
            tail[:] = (tail + [chunk])[-40:]
            if on_stderr:
                on_stderr(chunk, process)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if process.returncode not in (0, -signal.SIGTERM):
        raise UserError(f"{os.path.basename(argv[1])} failed: {''.join(tail).strip().splitlines()[-1]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, process.returncode


def tokens_per_s(logdir):
    """The mean of train.py's tokens_per_s points in TensorBoard, the first (which holds the tracing) left out."""
    cli.import_tensorflow()  # only here, quietly: the stages run in processes of their own
    import tensorflow as tf

    points = {}
    for name in os.listdir(logdir):
        if name.startswith("events.out"):
            for record in tf.data.TFRecordDataset(os.path.join(logdir, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == "tokens_per_s":
                        points[event.step] = float(tf.make_ndarray(value.tensor))
    later = [points[step] for step in sorted(points)][1:]
    return round(sum(later) / len(later)) if later else None


def train_py_rate(argv, steps):
    """Seconds to the first step, tokens per second after it, peak MB; train.py gets SIGTERM after `steps`."""
    start, seen = time.perf_counter(), {}

    def watch(text, process):
        for done, _ in PROGRESS.findall(text):
            done = int(done)
            if done >= 1 and "first" not in seen:
                seen["first"] = (time.perf_counter() - start, done)
            if done >= steps and "last" not in seen:
                seen["last"] = (time.perf_counter() - start, done)
                process.send_signal(signal.SIGTERM)  # it saves a checkpoint and exits

    _, peak, _ = run_stage(argv, watch)
    if "first" not in seen:
        raise UserError("train.py ended before its first step; run it by hand to see why")
    return {"first_step_s": round(seen["first"][0], 1), "steps": seen.get("last", seen["first"])[1],
            "tokens_per_s": tokens_per_s(argv[argv.index("--logdir") + 1]), "peak_rss_mb": round(peak)}


def main(argv):
    parser = Parser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--pairs", type=int, default=300000, help="sentence pairs in the corpus (default: 300000)")
    parser.add_argument("--steps", type=int, default=200, help="training steps measured (default: 200)")
    parser.add_argument("--code", default=ROOT, help="directory of the prepro.py and train.py measured")
    parser.add_argument("--workdir", default="", help="keep the corpus, vocab and logdir here (default: a "
                                                      "temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.steps < 3 * SUMMARY_EVERY:
        raise UserError(f"--pairs must be at least 1 and --steps at least {3 * SUMMARY_EVERY}")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_corpus_")
    try:
        os.makedirs(work, exist_ok=True)
        src, tgt = write_corpus(work, args.pairs)
        data = ["--source_train", src, "--target_train", tgt, "--vocab_dir", os.path.join(work, "vocab"), *VOCAB]
        seconds, peak, _ = run_stage([sys.executable, os.path.join(args.code, "prepro.py"), *data])
        common = {"pairs": args.pairs, "code": os.path.abspath(args.code)}
        print(json.dumps({"stage": "prepro", "seconds": round(seconds, 1), "peak_rss_mb": round(peak), **common}),
              flush=True)
        train = [sys.executable, os.path.join(args.code, "train.py"), *data, *MODEL,
                 "--logdir", os.path.join(work, "logdir")]
        print(json.dumps({"stage": "train", **train_py_rate(train, args.steps), **common}), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(main)

"""Measures training and decoding speed and memory; prints one JSON object per measurement.

    python bench.py                               # a small model, a few minutes on two CPU cores
    python bench.py --original_size               # the paper's base model (the original's default)
    python bench.py --measures decode_cached,decode_full --decode_len 50
    python bench.py --measures train_preset       # train.py --preset multi30k_cpu for one epoch

Inputs are synthetic sentence pairs of random ids with lengths spread evenly
between 4 and maxlen words, so the figures do not depend on a corpus being
present; --corpus uses the --dataset's training pairs instead (run download.py
and prepro.py first). Training figures count real (non-pad) target tokens over steps after
a warm-up; decoding figures decode every sentence to exactly decode_len words
(</S> is suppressed) after a warm-up call that compiles the decoder.

Each measurement runs in a process of its own, so that its peak_rss_mb (the
peak resident memory) is its own. train_preset runs train.py itself, with
dev evaluation and checkpoints as the preset has them, on the preset's
corpus (run download.py and prepro.py with the preset first), in a new
temporary logdir, and reports train.py's own figures and peak memory.
"""
import contextlib
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import keras
import numpy as np
import tensorflow as tf

import data_load
import vocab
from cli import UserError, run
from decoding import cached_greedy_decoder, greedy_decoder
from hyperparams import PRESETS, Hyperparams, parse_args
from model import build_model
from readers import read_parallel
from training import TrainStep, make_optimizer
from vocab import EOS, PAD


MEASURES = ("train_fixed", "train_bucketed", "decode_full", "decode_cached", "train_preset")
DEFAULT_MEASURES = MEASURES[:4]  # train_preset takes minutes and needs the preset's corpus: asked for by name
PRESET = "multi30k_cpu"  # train_preset's preset unless --preset is given
# The benchmark's own model unless --original_size: small enough for a CPU, big enough to be a Transformer.
SMALL = dict(hidden_units=256, num_blocks=3, num_heads=4, maxlen=20, batch_size=64, dropout_rate=0.1)
VOCAB = 4000  # ids per side of the synthetic pairs


def add_bench_flags(parser):
    parser.add_argument("--measures", default=",".join(DEFAULT_MEASURES),
                        help=f"comma-separated, of {', '.join(MEASURES)} (default: {','.join(DEFAULT_MEASURES)})")
    parser.add_argument("--original_size", action="store_true", default=False,
                        help="use the settings' defaults (512 wide, 6 blocks) instead of a 256-wide, 3-block model")
    parser.add_argument("--corpus", action="store_true", default=False,
                        help="use the training pairs of --dataset (with prepro.py's vocab) instead of synthetic ones")
    parser.add_argument("--train_steps", type=int, default=30, help="timed training steps (default: 30)")
    parser.add_argument("--untimed_steps", type=int, default=5, help="steps run before timing starts (default: 5)")
    parser.add_argument("--sentences", type=int, default=64, help="sentences decoded (default: 64)")
    parser.add_argument("--decode_len", type=int, default=50, help="words decoded per sentence (default: 50)")
    parser.add_argument("--preset_epochs", type=int, default=1,
                        help=f"train_preset: epochs of --preset (default {PRESET}) to train (default: 1)")


def synthetic_pairs(count, maxlen, seed):
    """Padded id arrays (count, maxlen) x2 with random lengths 4..maxlen (incl. </S>) per side."""
    rng = np.random.default_rng(seed)
    x, y = np.full((2, count, maxlen), PAD, np.int32)
    for row, (a, b) in enumerate(rng.integers(4, maxlen + 1, (count, 2))):
        x[row, :a - 1], x[row, a - 1] = rng.integers(4, VOCAB, a - 1), EOS
        y[row, :b - 1], y[row, b - 1] = rng.integers(4, VOCAB, b - 1), EOS
    return x, y


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device():
    gpus = tf.config.list_physical_devices("GPU")
    return f"{len(gpus)} GPU" if gpus else f"CPU ({os.cpu_count()} cores)"


def corpus_pairs(hp):
    """The training pairs of the settings' corpus that fit maxlen as padded ids, and the two vocab sizes."""
    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    src, tgt = read_parallel(hp.source_train, hp.target_train, clean=src_vocab.clean)
    x, y, _, _ = data_load.create_data(src, tgt, src_vocab, tgt_vocab, hp.maxlen)
    return x, y, (src_vocab.size, tgt_vocab.size)


def measure_training(hp, pairs, batch_tokens, args):
    """Target tokens per second over timed steps, after warm-up steps; the share of real (non-pad)
    tokens among the batches' positions, and the number of distinct batch shapes met."""
    x, y, vocabs = pairs
    keras.utils.set_random_seed(hp.seed)
    model = build_model(hp, *vocabs)
    optimizer = make_optimizer(hp, total_steps=args.untimed_steps + args.train_steps)
    optimizer.build(model.trainable_variables)
    train_step = TrainStep(model, optimizer, hp.label_smoothing, jit=hp.jit, rdrop_alpha=hp.rdrop_alpha)
    dataset = data_load.train_batches(data_load.array_pairs(x, y)[0], maxlen=x.shape[1], batch_size=hp.batch_size,
                                      seed=hp.seed, batch_tokens=batch_tokens)
    train_step.expect(dataset.element_spec)
    batches = iter(dataset.repeat())
    seen = []  # the batches run; counted after timing, not inside it

    def step():
        seen.append(next(batches))
        train_step(*seen[-1])

    for _ in range(args.untimed_steps):
        step()
    before = train_step.interval.tokens.numpy()  # waits for the device
    start = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    tokens = train_step.interval.tokens.numpy() - before
    seconds = time.perf_counter() - start
    sides = [side.numpy() for batch in seen for side in batch]
    return {"tokens_per_s": tokens / seconds, "steps_per_s": args.train_steps / seconds,
            "real_token_share": sum(int((ids != PAD).sum()) for ids in sides) / sum(ids.size for ids in sides),
            "batch_shapes": len({(src.shape, tgt.shape) for src, tgt in seen})}


def with_xla_dump(environment, dump_dir):
    """environment's XLA_FLAGS plus --xla_dump_to=dump_dir, for xla_compilations() to count."""
    return f"{environment.get('XLA_FLAGS', '')} --xla_dump_to={dump_dir}".strip()


def xla_compilations(dump_dir):
    """How many programs XLA compiled into dump_dir (XLA_FLAGS --xla_dump_to): one module file each."""
    return len(glob.glob(os.path.join(dump_dir, "*.before_optimizations.txt")))


def hyperparams_flags(values):
    """{setting: value} -> the flags that give them: ["--maxlen", "64", "--jit", "true", ...]."""
    return [text for name, value in values.items()
            for text in (f"--{name}", str(value).lower() if isinstance(value, bool) else str(value))]


EPOCH_LINE = re.compile(r"^epoch (\d+): .*?(?:dev BLEU ([\d.]+) .*?)?([\d,]+) tokens/s, (\d+) batch shapes, (\d+) s,",
                        re.M)


def measure_preset(explicit, args):
    """train.py --preset (multi30k_cpu by default) for --preset_epochs epochs in a new temporary logdir:
    its epoch lines' figures, and its peak resident memory."""
    values = {"preset": PRESET, **PRESETS[PRESET], **explicit} if "preset" not in explicit else explicit
    with tempfile.TemporaryDirectory(prefix="bench_preset_") as scratch:
        flags = hyperparams_flags({**values, "logdir": os.path.join(scratch, "logdir"),
                                   "num_epochs": args.preset_epochs})
        env = dict(os.environ)
        if values.get("jit"):
            env["XLA_FLAGS"] = with_xla_dump(env, os.path.join(scratch, "xla"))
        start = time.perf_counter()
        result = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"),
                                 *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seconds = time.perf_counter() - start
        if result.returncode:  # train.py's last line says why (a missing vocab: run prepro.py, ...)
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            raise UserError(f"train_preset: train.py --preset {values['preset']} failed: {last}")
        compiled = xla_compilations(os.path.join(scratch, "xla")) if values.get("jit") else None
    epochs = [{"epoch": int(e), "dev_bleu": float(b) if b else None, "tokens_per_s": float(t.replace(",", "")),
               "batch_shapes": int(n), "seconds": int(s)} for e, b, t, n, s in EPOCH_LINE.findall(result.stdout)]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # train.py's: the only child
    record = {"measure": "train_preset", "tokens_per_s": epochs[-1]["tokens_per_s"],
              "batch_shapes": epochs[-1]["batch_shapes"], "epochs": epochs, "seconds": round(seconds, 1),
              "peak_rss_mb": round(peak, 1), "settings": values}
    if compiled is not None:
        record["xla_compilations"] = compiled
    return record


def decoding_model(hp, vocabs):
    """An untrained model whose </S> logit is pushed down, so every sentence decodes to its limit."""
    keras.utils.set_random_seed(hp.seed)
    model = build_model(hp, *vocabs)
    bias = model.output_projection.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[EOS]], [-1e4]))
    return model


def measure_decoding(decoder, src, decode_len):
    """Sentences per second of one call over all of src (after one compiling call), and its output."""
    limits = tf.fill((src.shape[0],), decode_len)
    decoder(src[:2], limits[:2])  # trace and compile
    start = time.perf_counter()
    out = decoder(src, limits).numpy()
    return src.shape[0] / (time.perf_counter() - start), out


def run_each_alone(argv, measures):
    """Runs bench.py once per measure, each in a process of its own, and passes its JSON line on."""
    for name in measures:
        result = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--measures", name],
                                stdout=subprocess.PIPE, text=True)  # the last --measures wins
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        if result.returncode:  # its error is on stderr already
            sys.exit(result.returncode)


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_bench_flags)
    hp = Hyperparams(**{**({} if args.original_size else SMALL), **explicit})  # flags win
    measures = args.measures.split(",")
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise UserError(f"unknown --measures {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    for name, lowest in (("train_steps", 1), ("untimed_steps", 0), ("sentences", 1), ("decode_len", 1)):
        if getattr(args, name) < lowest:
            raise UserError(f"--{name} must be at least {lowest}, got {getattr(args, name)}")
    if args.preset_epochs < 1:
        raise UserError(f"--preset_epochs must be at least 1, got {args.preset_epochs}")
    if len(measures) > 1:
        return run_each_alone(argv, measures)
    name, = measures
    common = {"device": device(), "tf": tf.__version__}
    if name == "train_preset":
        print(json.dumps({**measure_preset(explicit, args), **common}), flush=True)
        return
    settings = {k: getattr(hp, k) for k in ("hidden_units", "num_blocks", "num_heads", "maxlen", "batch_size",
                                            "mixed_precision", "jit", "seed")}
    if args.corpus:
        with contextlib.redirect_stdout(sys.stderr):  # the readers' summaries; stdout is for JSON only
            pairs = corpus_pairs(hp)
    else:
        needed = (args.untimed_steps + args.train_steps) * hp.batch_size
        pairs = (*synthetic_pairs(needed, hp.maxlen, hp.seed), (VOCAB, VOCAB))
    settings.update(data=hp.source_train if args.corpus else "synthetic", pairs=len(pairs[0]))
    src = tf.constant(pairs[0][:args.sentences])
    if name.startswith("train"):
        # the same padded size per batch as fixed batches, unless --batch_tokens says otherwise
        tokens = (hp.batch_tokens or hp.batch_size * hp.maxlen) if name == "train_bucketed" else 0
        with tempfile.TemporaryDirectory(prefix="bench_xla_") as dump:
            if hp.jit:  # read by XLA at its first compilation
                os.environ["XLA_FLAGS"] = with_xla_dump(os.environ, dump)
            record = {"measure": name, **measure_training(hp, pairs, tokens, args),
                      "settings": {**settings, "batch_tokens": tokens, "steps": args.train_steps}}
            if hp.jit:
                record["xla_compilations"] = xla_compilations(dump)
        record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    else:
        model = decoding_model(hp, pairs[2])
        make = cached_greedy_decoder if name == "decode_cached" else greedy_decoder
        per_s, out = measure_decoding(make(model), src, args.decode_len)
        record = {"measure": name, "sentences_per_s": per_s, "peak_rss_mb": round(peak_rss_mb(), 1),
                  "settings": {**settings, "sentences": args.sentences, "decode_len": args.decode_len}}
        if name == "decode_cached":  # after peak_rss_mb: the full decoder runs for the comparison only
            full = greedy_decoder(model)(src, tf.fill((src.shape[0],), args.decode_len)).numpy()
            record["identical_to_full"] = bool(np.array_equal(out, full))
    print(json.dumps({**record, **common}), flush=True)


if __name__ == "__main__":
    run(main)

"""Measures training and decoding speed and memory; prints one JSON object per measurement.

    python -m benchmarks.bench                               # a small model, a few minutes on two CPU cores
    python -m benchmarks.bench --original_size               # the paper's base model (the original's default)
    python -m benchmarks.bench --measures decode_cached,decode_ct2_float32,decode_ct2_int8 --beam_size 4
    python -m benchmarks.bench --measures decode_cached,decode_ct2_int8 --sentences 1  # one at a time: latency
    python -m benchmarks.bench --measures train_preset       # train.py --preset multi30k_cpu for one epoch

Inputs are synthetic sentence pairs of random ids with lengths spread evenly
between 4 and maxlen words, so the figures do not depend on a corpus being
present; --corpus uses the --dataset's training pairs instead (run download.py
and prepro.py first). Training figures count real (non-pad) target tokens over
steps after a warm-up. Decoding figures (timing.py) decode every sentence to
exactly decode_len words (</S> is suppressed) after a warm-up call that
compiles the decoder: decode_cached is the decoder eval.py uses (in
--mixed_precision's dtype), decode_full reruns the whole prefix at each step
(greedy only), decode_ct2_float32 and decode_ct2_int8 run the same weights,
exported by bench.py as export.py would, in CTranslate2, on the same
sentences. --beam_size K makes every decode measure a beam search;
--sentences 1 makes it a latency: ms_per_sentence, the median over
--latency_sentences sentences translated one at a time.

Each measurement runs in a process of its own, so that its peak_rss_mb (the
peak resident memory) is its own; the CTranslate2 ones import no TensorFlow.
train_preset runs train.py itself, with dev evaluation and checkpoints as the
preset has them, on the preset's corpus (run download.py and prepro.py with
the preset first), in a new temporary logdir, and reports train.py's own
figures and peak memory.
"""
import argparse
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

if __package__ in (None, ""):  # run as a file: the pipeline's modules are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli import parse_args, run
from benchmarks import ROOT, timing
from hyperparams import PRESETS, Hyperparams
from messages import UserError


TRAIN_MEASURES = ("train_fixed", "train_bucketed")
DECODE_MEASURES = ("decode_full", "decode_cached", "decode_ct2_float32", "decode_ct2_int8")
MEASURES = (*TRAIN_MEASURES, *DECODE_MEASURES, "train_preset")
DEFAULT_MEASURES = MEASURES[:4]  # the others: asked for by name (train_preset takes minutes and needs its corpus)
PRESET = "multi30k_cpu"  # train_preset's preset unless --preset is given
# The benchmark's own model unless --original_size: small enough for a CPU, big enough to be a Transformer.
SMALL = dict(hidden_units=256, num_blocks=3, num_heads=4, maxlen=20, batch_size=64, dropout_rate=0.1)


def add_bench_flags(parser):
    parser.add_argument("--measures", default=",".join(DEFAULT_MEASURES),
                        help=f"comma-separated, of {', '.join(MEASURES)} (default: {','.join(DEFAULT_MEASURES)})")
    parser.add_argument("--original_size", action="store_true", default=False,
                        help="use the settings' defaults (512 wide, 6 blocks) instead of a 256-wide, 3-block model")
    parser.add_argument("--corpus", action="store_true", default=False,
                        help="use the training pairs of --dataset (with prepro.py's vocab) instead of synthetic ones")
    parser.add_argument("--train_steps", type=int, default=30, help="timed training steps (default: 30)")
    parser.add_argument("--untimed_steps", type=int, default=5, help="steps run before timing starts (default: 5)")
    parser.add_argument("--sentences", type=int, default=64,
                        help="sentences decoded in one call; 1: one at a time, a latency (default: 64)")
    parser.add_argument("--latency_sentences", type=int, default=20,
                        help="with --sentences 1: how many are timed, one at a time (default: 20)")
    parser.add_argument("--decode_len", type=int, default=50, help="words decoded per sentence (default: 50)")
    parser.add_argument("--preset_epochs", type=int, default=1,
                        help=f"train_preset: epochs of --preset (default {PRESET}) to train (default: 1)")
    # internal: where the parent process exported the CTranslate2 models (see run_each_alone)
    parser.add_argument("--ct2_dir", default=None, help=argparse.SUPPRESS)


def where(name):
    """Where a measure ran (the GPUs its engine sees, or the CPU), and TensorFlow's version if it used it."""
    if name.startswith("decode_ct2"):
        import ctranslate2
        gpus, versions = ctranslate2.get_cuda_device_count(), {}
    else:
        import tensorflow as tf
        gpus, versions = len(tf.config.list_physical_devices("GPU")), {"tf": tf.__version__}
    return {"device": f"{gpus} GPU" if gpus else f"CPU ({os.cpu_count()} cores)", **versions}


def corpus_pairs(hp):
    """The training pairs of the settings' corpus that fit maxlen as padded ids, and the two vocab sizes."""
    import data_load
    import vocab
    from readers import read_parallel

    src_vocab, tgt_vocab = vocab.load_vocabs(hp)
    src, tgt = read_parallel(hp.source_train, hp.target_train, clean=src_vocab.clean)
    x, y, _, _ = data_load.create_data(src, tgt, src_vocab, tgt_vocab, hp.maxlen)
    return x, y, (src_vocab.size, tgt_vocab.size)


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
        result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
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


def run_each_alone(argv, measures, hp, args):
    """Runs bench.py once per measure, each in a process of its own, and passes its JSON line on; the
    CTranslate2 measures on exports of the decoding model that a process of its own wrote first."""
    with tempfile.TemporaryDirectory(prefix="bench_ct2_") as exports:
        if any(name.startswith("decode_ct2") for name in measures) and args.ct2_dir is None:
            run_alone([*argv, "--measures", "export_ct2", "--ct2_dir", exports])
            argv = [*argv, "--ct2_dir", exports]
        for name in measures:
            run_alone([*argv, "--measures", name])  # the last --measures wins


def run_alone(argv):
    result = subprocess.run([sys.executable, "-m", "benchmarks.bench", *argv], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    if result.returncode:  # its error is on stderr already
        sys.exit(result.returncode)


def measure_decoding(name, hp, pairs, args):
    """A decode measure's record (timing.py), on the first --sentences (or --latency_sentences) sources."""
    one_at_a_time = args.sentences == 1
    x = pairs[0][:args.latency_sentences if one_at_a_time else args.sentences]
    rows = [[int(i) for i in row if i != 0] for row in x]  # without the pads
    settings = {"sentences": len(rows), "one_at_a_time": one_at_a_time, "decode_len": args.decode_len,
                "beam_size": hp.beam_size}
    if name.startswith("decode_ct2"):
        directory = os.path.join(args.ct2_dir, name.removeprefix("decode_ct2_"))
        record = timing.measure_ct2(directory, rows, args.decode_len, hp.beam_size, one_at_a_time)
    else:
        model = timing.decoding_model(hp, pairs[2])
        record = timing.measure_ours(model, name, rows, args.decode_len, hp.beam_size, one_at_a_time)
    return {"measure": name, **record, "peak_rss_mb": round(timing.peak_rss_mb(), 1), "settings": settings}


def check_flags(measures, hp, args):
    unknown = set(measures) - set(MEASURES) - {"export_ct2"}
    if unknown:
        raise UserError(f"unknown --measures {', '.join(sorted(unknown))}; choose from {', '.join(MEASURES)}")
    for name, lowest in (("train_steps", 1), ("untimed_steps", 0), ("sentences", 1), ("latency_sentences", 1),
                         ("decode_len", 1), ("preset_epochs", 1)):
        if getattr(args, name) < lowest:
            raise UserError(f"--{name} must be at least {lowest}, got {getattr(args, name)}")
    if "decode_full" in measures and hp.beam_size > 1:
        raise UserError(f"decode_full decodes greedily; drop it from --measures, or --beam_size {hp.beam_size}")


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_bench_flags)
    hp = Hyperparams(**{**({} if args.original_size else SMALL), **explicit})  # flags win
    measures = args.measures.split(",")
    check_flags(measures, hp, args)
    if len(measures) > 1 or (measures[0].startswith("decode_ct2") and args.ct2_dir is None):
        return run_each_alone(argv, measures, hp, args)
    name, = measures
    if name == "train_preset":
        print(json.dumps({**measure_preset(explicit, args), **where(name)}), flush=True)
        return
    settings = {k: getattr(hp, k) for k in ("hidden_units", "num_blocks", "num_heads", "maxlen", "batch_size",
                                            "mixed_precision", "jit", "seed")}
    if args.corpus:
        with contextlib.redirect_stdout(sys.stderr):  # the reader's summary line: stdout is for JSON only
            pairs = corpus_pairs(hp)
    else:
        needed = max((args.untimed_steps + args.train_steps) * hp.batch_size, args.sentences, args.latency_sentences)
        pairs = (*timing.synthetic_pairs(needed, hp.maxlen, hp.seed), (timing.VOCAB, timing.VOCAB))
    settings.update(data=hp.source_train if args.corpus else "synthetic", pairs=len(pairs[0]))
    if name == "export_ct2":
        positions = max(hp.maxlen, args.decode_len + 1)
        return timing.export_ct2(timing.decoding_model(hp, pairs[2]), hp, pairs[2][1], args.ct2_dir, positions)
    if name in TRAIN_MEASURES:
        figures, tokens = training_record(name, hp, pairs, args)
        record = {"measure": name, **figures,
                  "settings": {**settings, "batch_tokens": tokens, "steps": args.train_steps}}
    else:
        record = measure_decoding(name, hp, pairs, args)
        record["settings"] = {**settings, **record["settings"]}
    print(json.dumps({**record, **where(name)}), flush=True)


def training_record(name, hp, pairs, args):
    """A training measure's figures (timing.py), with XLA's compilations under --jit; and its batch size in tokens."""
    # the same padded size per batch as fixed batches, unless --batch_tokens says otherwise
    tokens = (hp.batch_tokens or hp.batch_size * hp.maxlen) if name == "train_bucketed" else 0
    with tempfile.TemporaryDirectory(prefix="bench_xla_") as dump:
        if hp.jit:  # read by XLA at its first compilation
            os.environ["XLA_FLAGS"] = with_xla_dump(os.environ, dump)
        record = timing.training_rate(hp, pairs, tokens, args.train_steps, args.untimed_steps)
        if hp.jit:
            record["xla_compilations"] = xla_compilations(dump)
    return {**record, "peak_rss_mb": round(timing.peak_rss_mb(), 1)}, tokens


if __name__ == "__main__":
    run(main)

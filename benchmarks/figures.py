"""Draws the pictures of docs/img: the preset's training curves, and speed side by side, from what the runs wrote.

    python -m benchmarks.figures --logdir /tmp/seed42 --logdir /tmp/seed7 --out docs/img
    python -m benchmarks.figures --bench "the original=docs/bench/original_small.jsonl" --bench "ours=..." \
        --out docs/img

training.png (one or more --logdir): per run, the training loss at every
report and the dev loss at the end of each epoch (left), and dev BLEU after
each epoch (right), read from the TensorBoard events train.py wrote.

speed.png (--bench LABEL=FILE, repeatable: JSON lines as bench.py and
../shared/peer's scripts print them, each bar named LABEL, or LABEL and the
measure when a file holds several): training target tokens/s, decoding
sentences/s in one call of many sentences, and ms per sentence one at a time.
"""
import glob
import os
import sys

if __package__ in (None, ""):  # run as a file: the pipeline's modules are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli
from cli import Parser, run
import plotting
from benchmarks import charts
from files import parse_json, write_atomic
from messages import UserError

def add_flags(parser):
    parser.add_argument("--logdir", action="append", default=[], help="a training run's logdir (repeatable)")
    parser.add_argument("--bench", action="append", default=[], metavar="LABEL=FILE",
                        help="a file of bench JSON lines and the label of its bars (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where to write training.png and speed.png")


def scalars(logdir):
    """{tag: [(step, value)]} of the scalars in a logdir's TensorBoard events, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    if not glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        raise UserError(f"{logdir} holds no TensorBoard events; pass the --logdir of a train.py run")
    events = EventAccumulator(logdir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:  # tf.summary's scalars come as tensors
        found[tag] = sorted((e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)
                            if e.tensor_proto.dtype != 7)  # (7: strings, the text summaries)
    return {tag: points for tag, points in found.items() if points}


def read_records(labelled):
    """The JSON objects of LABEL=FILE files (one per line), each with its "label"."""
    records = []
    for item in labelled:
        label, equals, path = item.rpartition("=")
        if not equals or not label:
            raise UserError(f"--bench {item}: give LABEL=FILE, e.g. --bench \"ours bf16=decode.jsonl\"")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [(number, parse_json(line)) for number, line in enumerate(f, 1) if line.strip()]
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a file of JSON lines ({getattr(e, 'strerror', None) or e}); pass bench.py's "
                            "output") from None
        for number, record in lines:
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: not a JSON object; pass bench.py's output, one object a line")
        lines = [record for _, record in lines]
        records += [{**record, "label": label if len(lines) == 1 else f"{label}: {record.get('measure', i)}"}
                    for i, record in enumerate(lines)]
    return records


def main(argv):
    parser = Parser(description=__doc__.splitlines()[0])
    add_flags(parser)
    args = parser.parse_args(argv)
    if not args.logdir and not args.bench:
        raise UserError("give --logdir (training curves) or --bench (speed), or both")
    if args.logdir:
        cli.import_tensorflow()  # (TensorBoard's reader imports it: its start-up lines dropped, as every script does)
        runs = {os.path.basename(os.path.normpath(logdir)): scalars(logdir) for logdir in args.logdir}
        write_atomic(os.path.join(args.out, "training.png"), plotting.png_bytes(charts.training_figure(runs)))
        print(f"{os.path.join(args.out, 'training.png')}: {', '.join(runs)}")
    if args.bench:
        records = read_records(args.bench)
        figure, drawn = charts.speed_figure(records)
        write_atomic(os.path.join(args.out, "speed.png"), plotting.png_bytes(figure))
        print(f"{os.path.join(args.out, 'speed.png')}: {drawn} of {len(records)} records drawn")


if __name__ == "__main__":
    run(main)

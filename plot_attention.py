"""Draws a trained model's attention for one sentence: --out FILE.png.

    python plot_attention.py --logdir logdir --out attention.png "Ein Mann fährt Fahrrad ."
    python plot_attention.py --logdir logdir --out cross.png --layer 2 --head 0 "Ein Mann fährt Fahrrad ."

The sentence is translated first (greedy, or --beam_size); then the model is
run on the sentence and its translation, and every attention weight is drawn:
one row of heatmaps per layer for encoder self-attention, decoder
self-attention and cross-attention, one column per head, tokens on the axes
(queries down, keys across). --layer and --head pick one layer or one head.
"""
import os
import struct

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import engines
import inference
import plotting
from cli import parse_args, run
from files import check_writable, write_atomic
from hyperparams import for_evaluation

# The settings plot_attention.py reads (--help lists these; the model's own come from hparams.json)
SETTINGS = ("logdir", "vocab_dir", "decode_extra", "decode_maxlen", "beam_size", "length_penalty",
            "average_checkpoints", "preset")


def add_plot_flags(parser):
    parser.add_argument("sentence", help="the German sentence")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    parser.add_argument("--layer", type=int, default=None, help="draw this layer only (0 = first)")
    parser.add_argument("--head", type=int, default=None, help="draw this head only (0 = first)")
    engines.add_model_flags(parser, ct2=False)


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS,
                                add_arguments=add_plot_flags, epilog=cli.FROM_LOGDIR)
    hp = for_evaluation(explicit)
    check_writable(os.path.dirname(os.path.abspath(args.out)), "out")
    engine = inference.load_engine(hp, args)
    seen = engine.attention(engine.source_ids(args.sentence))
    png = plotting.png_bytes(plotting.draw(seen["source"], seen["target"], seen["maps"], args.layer, args.head))
    write_atomic(args.out, png)  # never a half-written picture
    width, height = struct.unpack(">II", png[16:24])  # from the PNG header
    print(f"{args.out}: {width} x {height} pixels; translation: {seen['translation']}")


if __name__ == "__main__":
    run(main)

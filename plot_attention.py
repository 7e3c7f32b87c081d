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

import hyperparams
import plotting
from cli import UserError, check_writable, run, write_atomic
from hyperparams import parse_args
from inference import Translator, add_checkpoint_flags



def add_plot_flags(parser):
    parser.add_argument("sentence", help="the German sentence")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    parser.add_argument("--layer", type=int, default=None, help="draw this layer only (0 = first)")
    parser.add_argument("--head", type=int, default=None, help="draw this head only (0 = first)")
    add_checkpoint_flags(parser)


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_plot_flags)
    hp = hyperparams.for_evaluation(explicit)
    check_writable(os.path.dirname(os.path.abspath(args.out)), "out")
    translator = Translator(hp, args)
    cleaned = translator.src_vocab.clean(args.sentence)
    if not cleaned:
        raise UserError("the sentence is empty once cleaned as the training text was; give a German sentence")
    translation = translator.best_translation_ids(cleaned)
    source, target, maps = plotting.attention(translator.model, translator.src_vocab, translator.tgt_vocab,
                                              translator.src_vocab.encode([cleaned])[0], translation)
    png = plotting.png_bytes(plotting.draw(source, target, maps, args.layer, args.head))
    write_atomic(args.out, png)  # never a half-written picture
    width, height = struct.unpack(">II", png[16:24])  # from the PNG header
    print(f"{args.out}: {width} x {height} pixels; translation: {translator.tgt_vocab.decode([translation])[0]}")


if __name__ == "__main__":
    run(main)

"""Draws a trained model's attention for one sentence: --out FILE.png.

    python plot_attention.py --logdir logdir --out attention.png "Ein Mann fährt Fahrrad ."
    python plot_attention.py --logdir logdir --out cross.png --layer 2 --head 0 "Ein Mann fährt Fahrrad ."

The sentence is translated first (greedy, or --beam_size); then the model is
run on the sentence and its translation, and every attention weight is drawn:
one row of heatmaps per layer for encoder self-attention, decoder
self-attention and cross-attention, one column per head, tokens on the axes
(queries down, keys across). --layer and --head pick one layer or one head.
"""
import io
import os
import struct

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import hyperparams
from cli import UserError, check_writable, run, write_atomic
from hyperparams import parse_args
from model import shift_right
from inference import Translator, add_checkpoint_flags

CELL_INCHES, DPI = 3, 100  # each heatmap is 300 x 300 pixels


def add_plot_flags(parser):
    parser.add_argument("sentence", help="the German sentence")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    parser.add_argument("--layer", type=int, default=None, help="draw this layer only (0 = first)")
    parser.add_argument("--head", type=int, default=None, help="draw this head only (0 = first)")
    add_checkpoint_flags(parser)


def attention(model, src_vocab, tgt_vocab, src, translation):
    """(source tokens, target tokens, {kind: array (layers, h, Tq, Tk)}) of one sentence.

    src: its ids ending in </S>; translation: its translation's ids ending in </S>.
    """
    maps = model.attention_maps(tf.constant([src]), shift_right(tf.constant([translation])))
    target = ["<S>"] + tgt_vocab.tokens(translation[:-1])  # the decoder's input at each position
    return (src_vocab.tokens(src), target,
            {kind: np.stack([tf.cast(w[0], tf.float32).numpy() for w in weights]) for kind, weights in maps.items()})


def draw(source, target, maps, layer=None, head=None):
    """The heatmap grid as a matplotlib figure (rows: kind x layer, columns: heads); close it after use."""
    layers, heads = next(iter(maps.values())).shape[:2]
    for name, value, limit in (("--layer", layer, layers), ("--head", head, heads)):
        if value is not None and not 0 <= value < limit:
            raise UserError(f"{name} {value} does not exist; this model has {limit} (0 to {limit - 1})")
    rows = [(kind, i) for kind in maps for i in ([layer] if layer is not None else range(layers))]
    columns = [head] if head is not None else list(range(heads))
    figure, axes = plt.subplots(len(rows), len(columns), squeeze=False, dpi=DPI,
                                figsize=(CELL_INCHES * len(columns), CELL_INCHES * len(rows)))
    for r, (kind, i) in enumerate(rows):
        queries = source if kind.startswith("encoder") else target
        keys = target if kind.startswith("decoder") else source
        for c, h in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(maps[kind][i, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{kind}, layer {i}, head {h}", fontsize=7)
            ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=6)
            ax.set_yticks(range(len(queries)), queries, fontsize=6)
    figure.tight_layout()
    return figure


def png_bytes(figure):
    """The figure as PNG file contents; closes it."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_plot_flags)
    hp = hyperparams.for_evaluation(explicit)
    check_writable(os.path.dirname(os.path.abspath(args.out)), "out")
    translator = Translator(hp, ckpt=args.ckpt, best=args.best)
    cleaned = translator.src_vocab.clean(args.sentence)
    if not cleaned:
        raise UserError("the sentence is empty once cleaned as the training text was; give a German sentence")
    translation = translator.best_translation_ids(cleaned)
    source, target, maps = attention(translator.model, translator.src_vocab, translator.tgt_vocab,
                                     translator.src_vocab.encode([cleaned])[0], translation)
    png = png_bytes(draw(source, target, maps, args.layer, args.head))
    write_atomic(args.out, png)  # never a half-written picture
    width, height = struct.unpack(">II", png[16:24])  # from the PNG header
    print(f"{args.out}: {width} x {height} pixels; translation: {translator.tgt_vocab.decode([translation])[0]}")


if __name__ == "__main__":
    run(main)

"""Scores given translations with a trained model: the log-probability of each target given its source.

    python score.py --logdir logdir --source german.txt --target english.txt > scores.tsv
    python score.py --logdir logdir            # the test split's references, as eval.py translates it

Output: one line per line pair, `total<TAB>per_token<TAB>tokens`: the natural
log-probability the model gives the target's tokens (its words, or pieces,
and the closing </S>), their mean, and their number; an empty line for a pair
with an empty side. Useful to rerank n-best lists (translate.py --nbest) or to
filter a corpus. With --ensemble the models' log-probabilities are combined
as in decoding. Sources and targets are cleaned and tokenized as the training
text was.
"""
import math
import os
import sys

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import numpy as np
import tensorflow as tf

import data_load
import hyperparams
import readers
from cli import UserError, run, write_atomic
from decoding import as_models, combine, only_words
from hyperparams import parse_args
from inference import add_checkpoint_flags, load_trained
from model import shift_right
from vocab import PAD


def add_score_flags(parser):
    parser.add_argument("--source", default=None, metavar="FILE",
                        help="German sentences, one per line (default: --source_test)")
    parser.add_argument("--target", default=None, metavar="FILE",
                        help="their English translations to score, line by line (default: --target_test)")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the scores to FILE (default: stdout)")
    add_checkpoint_flags(parser, verb="score with", ensemble=True)


def token_log_probs(model):
    """A compiled function: src (N, T1), tgt (N, T2) ids -> (N, T2) float32 log-probabilities of each target
    token (0 at pads), under the distribution decoding draws from (pads and <S> are not words)."""
    models = as_models(model)

    @tf.function(input_signature=[data_load.IDS] * 2)  # one graph for all lengths
    def score(src, tgt):
        logits = combine([m((src, shift_right(tgt)), training=False) for m in models])  # (N, T2, V)
        logp = tf.nn.log_softmax(only_words(tf.cast(logits, tf.float32)), axis=-1)
        picked = tf.gather(logp, tgt, batch_dims=2)  # (N, T2)
        return tf.where(tgt == PAD, 0.0, picked)

    return score


def read_pairs(source, target):
    """The sentences of two line-aligned files, as two lists of the same length (blank lines kept)."""
    src = [text or "" for _, text in readers.read_sentences(source, "source")]
    tgt = [text or "" for _, text in readers.read_sentences(target, "target")]
    if len(src) != len(tgt):
        raise UserError(f"{source} has {len(src)} sentences but {target} has {len(tgt)}; "
                        "the two files must be line-aligned")
    return src, tgt


def score_lines(score, src_vocab, tgt_vocab, sources, targets, hp):
    """The output lines for the pairs: `total<TAB>per_token<TAB>tokens`, or "" for a pair with an empty side."""
    pairs = [(src_vocab.clean(s), src_vocab.clean(t)) for s, t in zip(sources, targets)]
    todo = [i for i, (s, t) in enumerate(pairs) if s and t]
    lines = [""] * len(pairs)
    for start in range(0, len(todo), hp.batch_size):
        rows = todo[start:start + hp.batch_size]
        src_ids = src_vocab.encode([pairs[i][0] for i in rows])
        tgt_ids = tgt_vocab.encode([pairs[i][1] for i in rows])
        longest = max(map(len, tgt_ids))
        if not hp.sinusoid and longest > hp.maxlen:
            raise UserError(f"a target of line {rows[0] + 1}-{rows[-1] + 1} has {longest} tokens, more than the "
                            f"{hp.maxlen} positions this model learned; score shorter sentences")
        src = data_load.within_positions(data_load.pad(src_ids, data_load.round_up(max(map(len, src_ids)))), hp)
        logp = score(src, data_load.pad(tgt_ids, data_load.round_up(longest))).numpy().astype(np.float64)
        for i, row, ids in zip(rows, logp, tgt_ids):
            total = float(row.sum())
            lines[i] = f"{total:.4f}\t{total / len(ids):.4f}\t{len(ids)}"
    return lines


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_score_flags)
    hp = hyperparams.for_evaluation(explicit)
    source, target = args.source or hp.source_test, args.target or hp.target_test
    if bool(args.source) != bool(args.target):
        raise UserError("pass both --source and --target (or neither, to score the test split's references)")
    if args.output and os.path.realpath(args.output) in {os.path.realpath(source), os.path.realpath(target)}:
        raise UserError(f"--output {args.output} is one of the files to score; pass another --output")
    sources, targets = read_pairs(source, target)
    trained = load_trained(hp, args)
    lines = score_lines(token_log_probs(trained.models), trained.src_vocab, trained.tgt_vocab, sources, targets, hp)
    text = "".join(f"{line}\n" for line in lines)
    if args.output:
        write_atomic(args.output, text)  # never a half-written file
        scored = [float(line.split("\t")[1]) for line in lines if line]
        mean = sum(scored) / len(scored) if scored else math.nan
        print(f"{args.output}: {len(scored)} of {len(lines)} pairs scored, mean log-probability per token "
              f"{mean:.4f}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    run(main)

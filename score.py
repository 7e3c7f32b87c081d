"""Scores given translations with a trained model: the log-probability of each target given its source.

    python score.py --logdir logdir --source german.txt --target english.txt > scores.tsv
    python score.py --logdir logdir            # the test split's references, as eval.py translates it

Output: one line per line pair, `total<TAB>per_token<TAB>tokens`: the natural
log-probability the model gives the target's tokens (its words, or pieces,
and the closing </S>), their mean, and their number; an empty line for a pair
with an empty side. Useful to rerank n-best lists (translate.py --nbest) or to
filter a corpus. With --ensemble the models' log-probabilities are combined
as in decoding; with --ct2 DIR the CTranslate2 export scores, without
TensorFlow. Sources and targets are cleaned and tokenized as the training
text was.
"""
import math
import os
import sys

import cli
import engines
import readers
from cli import output, parse_args, run
from files import write_atomic
from messages import UserError

# The settings score.py reads (--help lists these; the model's own come from hparams.json or export.json)
SETTINGS = ("dataset", "test_split", "source_test", "target_test", "vocab_dir", "logdir", "batch_size",
            "decode_maxlen", "average_checkpoints", "preset")


def add_score_flags(parser):
    parser.add_argument("--source", default=None, metavar="FILE",
                        help="German sentences, one per line (default: --source_test)")
    parser.add_argument("--target", default=None, metavar="FILE",
                        help="their English translations to score, line by line (default: --target_test)")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the scores to FILE (default: stdout)")
    engines.add_model_flags(parser, verb="score with", ensemble=True)


def read_pairs(source, target):
    """The sentences of two line-aligned files, as two lists of the same length (blank lines kept)."""
    src = [text or "" for _, text in readers.read_sentences(source, "source")]
    tgt = [text or "" for _, text in readers.read_sentences(target, "target")]
    if len(src) != len(tgt):
        raise UserError(f"{source} has {len(src)} sentences but {target} has {len(tgt)}; "
                        "the two files must be line-aligned")
    return src, tgt


def score_lines(scores):
    """Output lines of (total, tokens) or None: `total<TAB>per_token<TAB>tokens`, or "" for a pair with an
    empty side."""
    return ["" if score is None else f"{score[0]:.4f}\t{score[0] / score[1]:.4f}\t{score[1]}" for score in scores]


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS,
                                add_arguments=add_score_flags, epilog=cli.FROM_LOGDIR)
    hp = engines.settings(explicit, args)
    source, target = args.source or hp.source_test, args.target or hp.target_test
    if bool(args.source) != bool(args.target):
        raise UserError("pass both --source and --target (or neither, to score the test split's references)")
    if args.output and os.path.realpath(args.output) in {os.path.realpath(source), os.path.realpath(target)}:
        raise UserError(f"--output {args.output} is one of the files to score; pass another --output")
    sources, targets = read_pairs(source, target)
    lines = score_lines(engines.open_engine(hp, args).score(sources, targets))
    text = "".join(f"{line}\n" for line in lines)
    if args.output:
        write_atomic(args.output, text)  # never a half-written file
        scored = [float(line.split("\t")[1]) for line in lines if line]
        mean = sum(scored) / len(scored) if scored else math.nan
        print(f"{args.output}: {len(scored)} of {len(lines)} pairs scored, mean log-probability per token "
              f"{mean:.4f}", file=sys.stderr)
    else:
        output(text)


if __name__ == "__main__":
    run(main)

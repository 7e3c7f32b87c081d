"""Translates German sentences with a trained model: arguments, stdin, or --input FILE.

    python translate.py --logdir logdir "Ein Mann fährt Fahrrad ."
    cat german.txt | python translate.py --logdir logdir > english.txt
    python translate.py --logdir logdir --input german.txt --output english.txt --beam_size 4

Each input line is cleaned and tokenized as the training text was (refined
words, or raw text for a subword vocab); each output line is the detokenized
translation of the input line at the same place, an empty line for an empty
one. Lines from a pipe are translated in batches of --batch_size as they
arrive; at a terminal it asks for one sentence at a time. With --nbest N each
input gives N lines `index ||| translation ||| score`, best first.
"""
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off the console

import checkpoints
import data_load
import hyperparams
from decoding import decode_limits, make_decoder
from hyperparams import UserError, parse_args, run, write_atomic
from model import build_model


def add_translate_flags(parser):
    parser.add_argument("sentences", nargs="*", default=[], help="German sentences to translate (default: read stdin)")
    parser.add_argument("--input", default=None, metavar="FILE", help="translate FILE, one sentence per line")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the translations to FILE (with --input)")
    parser.add_argument("--nbest", type=int, default=1, metavar="N",
                        help="print the N best translations of each sentence (a smaller beam is widened to N)")
    parser.add_argument("--ckpt", default=None, metavar="PATH", help="checkpoint to use (default: latest in logdir)")
    parser.add_argument("--best", action="store_true", default=False,
                        help="use the checkpoint with the best dev BLEU (logdir/best)")


class Translator:
    """A trained model with its vocab: German lines -> lists of (English translation, score), best first."""

    def __init__(self, hp, nbest=1, ckpt=None, best=False):
        self.hp, self.nbest = hp, nbest
        self.src_vocab, self.tgt_vocab = data_load.load_vocabs(hp)
        self.model = build_model(hp, self.src_vocab.size, self.tgt_vocab.size)
        checkpoints.load_weights(self.model, hp, ckpt=ckpt, best=best)
        self.decode = make_decoder(self.model, max(hp.beam_size, nbest), hp.length_penalty)

    def __call__(self, lines):
        cleaned = [self.src_vocab.clean(line) for line in lines]
        todo = [i for i, text in enumerate(cleaned) if text]
        results = [[("", 0.0)] * self.nbest for _ in lines]  # an empty line translates to an empty line
        if todo:
            rows, scores = self.best_ids([cleaned[i] for i in todo])
            for i, hypotheses, row_scores in zip(todo, rows, scores):
                results[i] = list(zip(self.tgt_vocab.decode(hypotheses), map(float, row_scores)))
        return results

    def best_ids(self, cleaned):
        """Cleaned, non-empty sentences -> the nbest hypotheses' ids (n, nbest, L) and scores (n, nbest)."""
        ids = self.src_vocab.encode(cleaned)
        src = data_load.pad(ids, max(map(len, ids)))
        if not self.hp.sinusoid:
            src = src[:, :self.hp.maxlen]  # learned positions exist only up to maxlen
        ids, scores = self.decode(src, decode_limits(src, extra=self.hp.decode_extra, cap=self.hp.decode_cap))
        return ids[:, :self.nbest].numpy(), scores[:, :self.nbest].numpy()  # best first

    def encode_translation(self, cleaned):
        """The best translation's ids of one cleaned sentence, ending in </S>."""
        return data_load.ending_in_eos(self.best_ids([cleaned])[0][0, 0])


def format_results(results, first_index, nbest):
    """Output lines: the best translation per input, or with nbest `index ||| translation ||| score`."""
    if nbest == 1:
        return [hypotheses[0][0] for hypotheses in results]
    return [f"{first_index + n} ||| {text} ||| {score:.4f}"
            for n, hypotheses in enumerate(results) for text, score in hypotheses]


def stream(translate, lines, out, batch_size, nbest):
    """Translates an iterable of lines in batches, writing (and flushing) each batch's output."""
    batch, done = [], 0
    for line in lines:
        batch.append(line.rstrip("\r\n"))
        if len(batch) == batch_size:
            out.write("".join(f"{o}\n" for o in format_results(translate(batch), done, nbest)))
            out.flush()
            done, batch = done + len(batch), []
    if batch:
        out.write("".join(f"{o}\n" for o in format_results(translate(batch), done, nbest)))
        out.flush()


def interactive(translate, nbest):
    """A prompt at a terminal: one German sentence in, its translation out, until EOF (Ctrl-D)."""
    index = 0
    while True:
        try:
            line = input("de> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        for text in format_results(translate([line]), index, nbest):
            print(f"en> {text}")
        index += 1


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], add_arguments=add_translate_flags)
    hp = hyperparams.for_evaluation(explicit)
    if args.nbest < 1:
        raise UserError(f"--nbest must be at least 1, got {args.nbest}")
    if args.output and not args.input:
        raise UserError("--output needs --input FILE (otherwise the translations go to stdout)")
    if args.input and args.sentences:
        raise UserError("give sentences as arguments or --input FILE, not both")
    if args.input and not os.path.isfile(args.input):
        raise UserError(f"{args.input} not found; pass an existing file to --input")
    translate = Translator(hp, nbest=args.nbest, ckpt=args.ckpt, best=args.best)

    if args.sentences:
        print("\n".join(format_results(translate(args.sentences), 0, args.nbest)))
    elif args.input:
        lines = [text or "" for _, text in data_load.read_sentences(args.input, "input")]
        out = io.StringIO()
        stream(translate, lines, out, hp.batch_size, args.nbest)
        text = out.getvalue()
        if args.output:
            write_atomic(args.output, text)  # never a half-written file
            print(f"{args.output}: {len(lines)} sentences translated", file=sys.stderr)
        else:
            sys.stdout.write(text)
    elif sys.stdin.isatty():
        interactive(translate, args.nbest)
    else:
        stream(translate, sys.stdin, sys.stdout, hp.batch_size, args.nbest)


if __name__ == "__main__":
    run(main)

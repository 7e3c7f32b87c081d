"""Translates German sentences with a trained model: arguments, stdin, or --input FILE.

    python translate.py --logdir logdir "Ein Mann fährt Fahrrad ."
    cat german.txt | python translate.py --logdir logdir > english.txt
    python translate.py --logdir logdir --input german.txt --output english.txt --beam_size 4

Each input line is cleaned and tokenized as the training text was (refined
words, or raw text for a subword vocab); each output line is the detokenized
translation of the input line at the same place, an empty line for an empty
one. Lines from a pipe are translated in batches of --batch_size as they
arrive; at a terminal it asks for one sentence at a time. With --nbest N each
input gives N lines `index ||| translation ||| score`, best first. With
--ct2 DIR the CTranslate2 export in DIR translates, without TensorFlow.
With --split_sentences a line may hold a paragraph: each of its sentences is
translated on its own (batched with the others) and the translations are put
back on one line, in the line's own spacing. A sentence longer than
--decode_maxlen tokens is refused with its line number.
"""
import io
import os
import sys

import cli
import engines
import readers
from cli import output, parse_args, run
from files import write_atomic
from hyperparams import MAX_BEAM
from messages import UserError

# The settings translate.py reads (--help lists these; the model's own come from hparams.json or export.json)
SETTINGS = ("logdir", "vocab_dir", "batch_size", "seed", "decode_extra", "decode_maxlen", "beam_size",
            "length_penalty", "average_checkpoints", "sampling_topk", "sampling_temperature", "preset")


def add_translate_flags(parser):
    parser.add_argument("sentences", nargs="*", default=[], help="German sentences to translate (default: read stdin)")
    parser.add_argument("--input", default=None, metavar="FILE", help="translate FILE, one sentence per line")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the translations to FILE (with --input)")
    parser.add_argument("--nbest", type=int, default=1, metavar="N",
                        help="print the N best translations of each sentence (a smaller beam is widened to N)")
    parser.add_argument("--split_sentences", action="store_true", default=False,
                        help="split each line into sentences (German rules: abbreviations, dates, quotes), translate "
                             "them one by one and put the line back together (default: a line is one sentence)")
    engines.add_model_flags(parser, ensemble=True)


def format_results(results, first_index, nbest):
    """Output lines: the best translation per input, or with nbest `index ||| translation ||| score`."""
    if nbest == 1:
        return [hypotheses[0][0] for hypotheses in results]
    return [f"{first_index + n} ||| {text} ||| {score:.4f}"
            for n, hypotheses in enumerate(results) for text, score in hypotheses]


def stream(translate, lines, write, batch_size, nbest):
    """Translates an iterable of lines in batches, writing each batch's output with write(text)."""
    batch, done = [], 0
    for line in lines:
        batch.append(line.rstrip("\r\n"))
        if len(batch) == batch_size:
            write("".join(f"{o}\n" for o in format_results(translate(batch, first_line=done + 1), done, nbest)))
            done, batch = done + len(batch), []
    if batch:
        write("".join(f"{o}\n" for o in format_results(translate(batch, first_line=done + 1), done, nbest)))


def interactive(translate, nbest):
    """A prompt at a terminal: one German sentence in, its translation out, until EOF (Ctrl-D)."""
    index = 0
    while True:
        try:
            line = input("de> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        try:
            results = translate([line])
        except UserError as e:  # a sentence too long: said, and the next one asked for
            print(f"error: {e}", file=sys.stderr)
            continue
        for text in format_results(results, index, nbest):
            print(f"en> {text}")
        index += 1


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS,
                                add_arguments=add_translate_flags, epilog=cli.FROM_LOGDIR)
    if not 1 <= args.nbest <= MAX_BEAM:  # the script's own flags first, before the model's settings are read
        raise UserError(f"--nbest must be between 1 and {MAX_BEAM}, got {args.nbest}")
    if args.split_sentences and args.nbest > 1:
        raise UserError("--nbest lists are per sentence and --split_sentences puts sentences back together; use "
                        "one of the two (serve.py's /translate gives both, sentence by sentence)")
    hp = engines.settings(explicit, args)
    if args.output and not args.input:
        raise UserError("--output needs --input FILE (otherwise the translations go to stdout)")
    for number, sentence in enumerate(args.sentences, 1):  # bytes that are not UTF-8 come as lone surrogates
        problem = readers.unicode_problem(sentence)
        if problem:
            raise UserError(f"argument {number} is not valid UTF-8 ({problem}); pass UTF-8 text")
    if args.input and args.sentences:
        raise UserError("give sentences as arguments or --input FILE, not both")
    if args.input and os.path.isdir(args.input):
        raise UserError(f"--input {args.input} is a directory; pass the file of German sentences")
    if args.input and not os.path.isfile(args.input):
        raise UserError(f"{args.input} not found; pass an existing file to --input")
    if args.output and os.path.realpath(args.output) == os.path.realpath(args.input):
        raise UserError(f"--output is the --input file {args.input}: the translations would replace the German "
                        "text; pass another --output")
    engine = engines.open_engine(hp, args, nbest=args.nbest)
    translate = engine.translate_paragraphs if args.split_sentences else engine

    if args.sentences:
        output("".join(f"{line}\n" for line in format_results(translate(args.sentences), 0, args.nbest)))
    elif args.input:
        lines = [text or "" for _, text in readers.read_sentences(args.input, "input")]
        out = io.StringIO()
        stream(translate, lines, out.write, hp.batch_size, args.nbest)
        if args.output:
            write_atomic(args.output, out.getvalue())  # never a half-written file
            print(f"{args.output}: {len(lines)} sentences translated", file=sys.stderr)
        else:
            output(out.getvalue())
    elif sys.stdin.isatty():
        interactive(translate, args.nbest)
    else:  # decoded as --input is: UTF-8 or a one-line error
        stream(translate, (text for _, text in readers.decode_lines(sys.stdin.buffer, "<stdin>")), output,
               hp.batch_size, args.nbest)


if __name__ == "__main__":
    run(main)

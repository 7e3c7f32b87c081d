"""A trained model put to use, whichever engine runs it: the TensorFlow model itself (--logdir, inference.py)
or its CTranslate2 export (--ct2 DIR, ct2.py).

translate.py, eval.py, score.py and serve.py choose the engine with open_engine();
both engines clean and tokenize lines as the training text was, refuse a
sentence too long to translate in one line (before any tensor is made),
translate in batches of --batch_size and hand back (translation, score)
lists, best first. With --ct2 nothing imports TensorFlow.
"""
import argparse
import copy
import dataclasses
import math

from tqdm import tqdm

import hyperparams
from messages import UserError
from readers import read_parallel
from vocab import EOS


def add_model_flags(parser, verb="use", ensemble=False, ct2=True):
    """--ckpt, --best and --raw_weights, which choose the weights a script loads (and --ensemble, and --ct2)."""
    if ct2:
        parser.add_argument("--ct2", default=None, metavar="DIR",
                            help=f"{verb} the CTranslate2 export in DIR (export.py --format ctranslate2) instead of "
                                 "the TensorFlow model in --logdir: faster on a CPU, and without TensorFlow")
    parser.add_argument("--ckpt", default=None, metavar="PATH",
                        help=f"checkpoint to {verb}, e.g. logdir/model_epoch_20_gs_1000 (default: the latest "
                             "in --logdir, or the average of --average_checkpoints)")
    parser.add_argument("--best", action="store_true", default=False,
                        help=f"{verb} the checkpoint with the best dev BLEU (logdir/best, kept with --dev_eval)")
    parser.add_argument("--raw_weights", action="store_true", default=False,
                        help="a model trained with --ema_decay: the weights themselves, not their moving average")
    if ensemble:
        parser.add_argument("--ensemble", action="append", default=[], metavar="LOGDIR",
                            help="add the model trained in LOGDIR (same vocab; its newest checkpoint, or its best "
                                 "or average as chosen for --logdir) and combine their predictions; repeatable")


LATEST = argparse.Namespace(ct2=None, ckpt=None, best=False, raw_weights=False, ensemble=[])  # the flags' defaults


def settings(explicit, args):
    """The settings of the model the flags choose (from logdir/hparams.json, or the export's export.json),
    with the flags given on top."""
    if getattr(args, "ct2", None) is None:
        return hyperparams.for_evaluation(explicit)
    chosen = [f"--{name}" for name in ("ckpt", "best", "raw_weights", "ensemble") if getattr(args, name, None)]
    if chosen:
        raise UserError(f"{', '.join(chosen)} choose among the checkpoints in --logdir; --ct2 {args.ct2} holds the "
                        "weights it was exported with (export.py takes the same flags)")
    import ct2
    return ct2.settings(args.ct2, explicit)


def open_engine(hp, args=LATEST, nbest=1):
    """The engine the flags choose: ct2.Translator for --ct2 DIR, else inference.Translator (TensorFlow)."""
    if getattr(args, "ct2", None) is not None:
        import ct2
        return ct2.Translator(args.ct2, hp, nbest)
    import cli
    cli.import_tensorflow()  # only now, and only for this engine
    import inference
    return inference.load_translator(hp, args, nbest)


def decode_limit(length, hp):
    """The longest translation allowed for a source of `length` tokens (</S> included), </S> included."""
    return min(length + hp.decode_extra, hp.decode_cap)


class TooLong(UserError):
    """A sentence with more tokens than the model may translate (or score): its count and the limit."""

    def __init__(self, message, tokens, limit):
        super().__init__(message)
        self.tokens, self.limit = tokens, limit


def encode(vocab, sentences, hp, numbers=None, target=False):
    """Cleaned, non-empty sentences -> their id lists, each ending in </S>.

    Positions: sinusoid ones exist for any length, but a sentence of more than
    hp.decode_cap tokens is refused (UserError) before any tensor is made: its
    translation could not be whole, and its attention would fill the memory.
    Learned ones exist up to maxlen: a longer source keeps its first maxlen - 1
    tokens and </S>, a longer target (score.py) is refused (TooLong, a
    UserError). numbers: the sentences' line numbers, for the message.
    """
    rows = vocab.encode(sentences)
    limit = hp.decode_cap if hp.sinusoid else hp.maxlen
    for i, row in enumerate(rows):
        if len(row) <= limit:
            continue
        if not (hp.sinusoid or target):
            rows[i] = row[:limit - 1] + [EOS]
            continue
        where = f"line {numbers[i]}" if numbers else f"sentence {i + 1}"
        fix = ("a translation may have (--decode_maxlen); split it into sentences, or raise --decode_maxlen"
               if hp.sinusoid else "positions this model learned (--maxlen); score shorter sentences")
        raise TooLong(f"{where} has {len(row):,} tokens, more than the {limit} {fix}", len(row), limit)
    return rows


class Engine:
    """What both engines share: lines in, (translation, score) lists out, in batches of --batch_size.

    A subclass sets kind ("tensorflow" or "ctranslate2"), hp, src_vocab,
    tgt_vocab, nbest, name (for results files), checkpoints (the weights used)
    and vocab_sha256 (of the vocab it was trained with), and defines
    nbest_ids(rows): id rows ending in </S> -> for each, its nbest (ids,
    score), best first; and token_log_probs(src_rows, tgt_rows) -> for each
    pair, the log-probability of each target token, </S> included.
    """

    def variant(self, nbest=None, **decoding):
        """The same model and vocab with other decoding settings (beam_size, length_penalty, ...) and nbest:
        a shallow copy, reconfigured by configure()."""
        other = copy.copy(self)
        other.hp = dataclasses.replace(self.hp, **decoding)
        other.nbest = nbest or self.nbest
        other.configure()
        return other

    def configure(self):
        """Called after hp or nbest changed (variant()): what depends on them is made again."""

    def __call__(self, lines, first_line=1, progress=None):
        """Raw German lines -> for each, nbest (English translation, score), best first ("" for an empty line).
        first_line: the line number of lines[0] (for errors); progress: a progress bar's title, or None."""
        cleaned = [self.src_vocab.clean(line) for line in lines]
        todo = [i for i, text in enumerate(cleaned) if text]
        results = [[("", 0.0)] * self.nbest for _ in lines]
        rows = encode(self.src_vocab, [cleaned[i] for i in todo], self.hp, [first_line + i for i in todo])
        size = self.hp.batch_size
        for start in tqdm(range(0, len(rows), size), total=math.ceil(len(rows) / size), desc=progress, unit="batch",
                          leave=False, disable=progress is None):
            found = self.nbest_ids(rows[start:start + size])
            texts = iter(self.tgt_vocab.decode([ids for hypotheses in found for ids, _ in hypotheses]))
            for i, hypotheses in zip(todo[start:start + size], found):
                results[i] = [(next(texts), float(score)) for _, score in hypotheses]
        return results

    def score(self, sources, targets, first_line=1):
        """The log-probability the model gives each target after its source: (total, tokens) per pair, </S>
        counted, or None for a pair with an empty side."""
        pairs = [(self.src_vocab.clean(s), self.tgt_vocab.clean(t)) for s, t in zip(sources, targets)]
        todo = [i for i, (s, t) in enumerate(pairs) if s and t]
        numbers = [first_line + i for i in todo]
        src = encode(self.src_vocab, [pairs[i][0] for i in todo], self.hp, numbers)
        tgt = encode(self.tgt_vocab, [pairs[i][1] for i in todo], self.hp, numbers, target=True)
        scores = [None] * len(pairs)
        for start in range(0, len(todo), self.hp.batch_size):
            end = start + self.hp.batch_size
            for i, logp in zip(todo[start:end], self.token_log_probs(src[start:end], tgt[start:end])):
                scores[i] = (float(sum(logp)), len(logp))
        return scores


def test_pairs(hp, src_vocab, tgt_vocab, keep_all=False, split="test"):
    """The test (or dev) split's cleaned source and reference sentences: by default only the pairs whose sides
    have at most maxlen tokens, as the original evaluated; keep_all: every pair."""
    flags = (f"source_{split}", f"target_{split}")
    sources, references = read_parallel(getattr(hp, flags[0]), getattr(hp, flags[1]), flags=flags,
                                        clean=src_vocab.clean)
    if not keep_all:
        lengths = zip(map(len, src_vocab.encode(sources)), map(len, tgt_vocab.encode(references)))
        kept = [i for i, (a, b) in enumerate(lengths) if max(a, b) <= hp.maxlen]
        sources, references = [sources[i] for i in kept], [references[i] for i in kept]
        if not sources:
            raise UserError(f"no {split} pair in {getattr(hp, flags[0])} fits --maxlen {hp.maxlen}; "
                            "pass --all to evaluate every sentence")
    return sources, references

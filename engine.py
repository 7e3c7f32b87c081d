"""What every engine is: the contract a trained model fulfils for the scripts and the service, whichever
library runs it. Nothing here imports TensorFlow or CTranslate2.

    lines -> cleaned as the training text was -> ids ending in </S> (encode(): one policy for the length)
          -> an engine's nbest_ids(), in batches of --batch_size sentences of similar length
          -> (translation, score) lists in the lines' order, best first

inference.TensorFlowEngine runs the model trained in --logdir, ct2.CTranslate2Engine
its export (--ct2 DIR); engines.open_engine() chooses between them. A line is
encoded once: encode_lines() hands its ids on to translate_ids(), which serve.py
calls with ids it has already checked against its limits.
"""
import abc
import copy
import dataclasses
import math

from tqdm import tqdm

import paragraphs
from messages import UserError
from readers import unicode_problem
from vocab import EOS


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


def check_text(lines, first_line=1, numbers=None):
    """Refuses (UserError, naming its line number) a line that is not Unicode text UTF-8 can hold, before it
    reaches a tokenizer. numbers: each line's number, where they are not first_line, first_line + 1, ..."""
    for i, line in enumerate(lines):
        problem = unicode_problem(line)
        if problem:
            number = numbers[i] if numbers else first_line + i
            raise UserError(f"line {number} is not valid Unicode text ({problem}); give UTF-8 text")


class Engine(abc.ABC):
    """Lines in, (translation, score) lists out, in batches of --batch_size; and target log-probabilities.

    A subclass sets kind ("tensorflow" or "ctranslate2"), hp, src_vocab,
    tgt_vocab, nbest, name (for results files), checkpoints (the weights used)
    and vocab_sha256 (of the vocab it was trained with), and defines
    nbest_ids() and token_log_probs().
    """

    @abc.abstractmethod
    def nbest_ids(self, rows):
        """Id rows ending in </S> (at most --batch_size) -> for each, its nbest (ids, score), best first."""

    @abc.abstractmethod
    def token_log_probs(self, src_rows, tgt_rows):
        """Id rows ending in </S> -> for each pair, the log-probability of each target token, </S> included."""

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

    def check_limits(self):
        """Refuses settings beyond what the model can do, before it is ever called (each engine's constructor
        calls it)."""
        if self.hp.sampling_topk > self.tgt_vocab.size:
            raise UserError(f"--sampling_topk {self.hp.sampling_topk} is more than the {self.tgt_vocab.size} words "
                            f"this model can write; pass at most {self.tgt_vocab.size}")

    def encode_lines(self, lines, first_line=1, numbers=None):
        """Raw German lines -> for each, its ids ending in </S>, or None for a line empty once cleaned; a line
        too long to translate is refused (TooLong, naming its line number from first_line, or numbers[i])."""
        numbers = numbers or range(first_line, first_line + len(lines))
        check_text(lines, numbers=numbers)
        cleaned = [self.src_vocab.clean(line) for line in lines]
        todo = [i for i, text in enumerate(cleaned) if text]
        rows = [None] * len(lines)
        for i, row in zip(todo, encode(self.src_vocab, [cleaned[i] for i in todo], self.hp,
                                       [numbers[i] for i in todo])):
            rows[i] = row
        return rows

    def translate_ids(self, rows, progress=None):
        """Id rows from encode_lines() -> for each, nbest (English translation, score), best first ("" for None,
        an empty line). progress: a progress bar's title, or None."""
        results = [[("", 0.0)] * self.nbest for _ in rows]
        # Batches of sentences of similar length (the results go back in input order): a batch pads its
        # sources to its longest and decodes until its last sentence ends, so mixed lengths waste steps.
        todo = sorted((i for i, row in enumerate(rows) if row is not None), key=lambda i: len(rows[i]))
        size = self.hp.batch_size
        for start in tqdm(range(0, len(todo), size), total=math.ceil(len(todo) / size), desc=progress, unit="batch",
                          leave=False, disable=progress is None):
            members = todo[start:start + size]
            found = self.nbest_ids([rows[i] for i in members])
            texts = iter(self.tgt_vocab.decode([ids for hypotheses in found for ids, _ in hypotheses]))
            for i, hypotheses in zip(members, found):
                results[i] = [(next(texts), float(score)) for _, score in hypotheses]
        return results

    def __call__(self, lines, first_line=1, progress=None):
        """Raw German lines -> for each, nbest (English translation, score), best first ("" for an empty line).
        first_line: the line number of lines[0] (for errors); progress: a progress bar's title, or None."""
        return self.translate_ids(self.encode_lines(lines, first_line), progress)

    def translate_paragraphs(self, lines, first_line=1, progress=None):
        """Raw German lines of one paragraph or more each -> for each, [(its translation, the sum of its
        sentences' scores)]: every sentence translated on its own (paragraphs.split), batched with the
        others, and put back in the line's own whitespace. A sentence too long is refused with its line's
        number."""
        split = [paragraphs.split(line) for line in lines]
        numbers = [first_line + i for i, paragraph in enumerate(split) for _ in paragraph.sentences]
        sentences = [sentence for paragraph in split for sentence in paragraph.sentences]
        best = iter(hypotheses[0] for hypotheses in
                    self.translate_ids(self.encode_lines(sentences, numbers=numbers), progress))
        results = []
        for paragraph in split:
            found = [next(best) for _ in paragraph.sentences]
            results.append([(paragraph.join([text for text, _ in found]), sum(score for _, score in found))])
        return results

    def score(self, sources, targets, first_line=1):
        """The log-probability the model gives each target after its source: (total, tokens) per pair, </S>
        counted, or None for a pair with an empty side."""
        check_text(sources, first_line)
        check_text(targets, first_line)
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

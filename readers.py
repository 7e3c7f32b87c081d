"""Corpus readers: IWSLT XML, IWSLT training tags, plain or gzipped text -> cleaned, aligned sentence pairs.

A reader is chosen by the file's name. Every problem with a file (missing,
not UTF-8, a damaged .gz, a malformed <seg> line, sides of different length)
is a UserError naming the file and, where there is one, the line.
"""
import gzip
import itertools
import os
import zlib
from dataclasses import dataclass

import regex

from files import file_digest
from messages import UserError


_NOT_KEPT = regex.compile(r"[^\s\p{Latin}']")  # the original's refine rule
_SEG = regex.compile(r"<seg[^>]*>(.*?)</seg>")


def refine(text):
    """Deletes every character that is not whitespace, a Latin letter or an apostrophe.

    As the original: digits and punctuation vanish ("26-jährige" -> "jährige"),
    case is kept; runs of whitespace become one space.
    """
    return " ".join(_NOT_KEPT.sub("", text).split())


def decode_lines(lines, name):
    """Yields (line number, text) of binary lines that must be UTF-8; a byte-order mark is dropped.

    name: the file (or <stdin>) the lines come from, for errors.
    """
    for lineno, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            damaged = " (or, since it is compressed, damaged: fetch it again)" if name.endswith(".gz") else ""
            raise UserError(f"{name}:{lineno}: not valid UTF-8 (byte {e.start} of the line); convert the text to "
                            f"UTF-8, e.g. with iconv{damaged}") from None
        yield lineno, (text.removeprefix("\ufeff") if lineno == 1 else text).rstrip("\r\n")


def check_file(path, flag):
    """Refuses a corpus file that is not there, naming the flag that gave its path."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"{path} is not a file of text (a directory or a device); pass a file to --{flag}")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; fetch the --dataset corpus with download.py (python download.py "
                        f"iwslt2016 or multi30k) or pass the file's path with --{flag}")


def corpus_digest(src_path, tgt_path, flags=("source_train", "target_train")):
    """sha256 of a parallel corpus' two files, one after the other: what a vocab and shards were made from."""
    for path, flag in zip((src_path, tgt_path), flags):
        check_file(path, flag)
    try:
        return file_digest(src_path, tgt_path)
    except OSError as e:
        raise UserError(f"cannot read {e.filename} ({e.strerror}); check the file or pass another path") from None


def read_lines(path, flag):
    """Yields (line number, text) of a UTF-8 file, gunzipped when its name ends in .gz."""
    check_file(path, flag)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            yield from decode_lines(f, path)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a broken .gz
        raise UserError(f"{path}: cannot be read ({e}); check the file or pass another --{flag}") from None


def _is_xml(path):
    return os.path.basename(path).removesuffix(".gz").endswith(".xml")


def iter_sentences(path, flag):
    """Yields one side of a corpus as (line number, sentence or None), reading the file as it goes.

    The format follows the file name. IWSLT XML (`*.xml`): only `<seg>` lines
    are sentences, tags stripped. IWSLT `train.tags.*`: lines starting with `<`
    are talk metadata and come back as None. Anything else: plain text, one
    sentence per line. `flag` names the setting the path came from, for errors.
    """
    lines = read_lines(path, flag)
    if _is_xml(path):
        for n, line in lines:
            if "<seg" in line:
                found = _SEG.findall(line)  # each <seg> is a sentence, even two on one line
                if len(found) != line.count("<seg"):
                    raise UserError(f"{path}:{n}: malformed <seg> line (expected <seg id=\"N\"> text </seg> "
                                    "on one line); fix the file or fetch it again")
                yield from ((n, text) for text in found)
    elif os.path.basename(path).startswith("train.tags"):
        yield from ((n, None if line.startswith("<") else line) for n, line in lines)
    else:
        yield from lines


def read_sentences(path, flag):
    """iter_sentences() as a list."""
    return list(iter_sentences(path, flag))


@dataclass
class Counts:
    """What iter_parallel() kept and skipped so far."""
    pairs: int = 0
    metadata: int = 0
    blank: int = 0


def iter_parallel(src_path, tgt_path, flags=("source_train", "target_train"), clean=refine, counts=None):
    """Yields the (source, target) sentence pairs of a parallel corpus, cleaned, reading both files in
    lockstep, so that memory does not grow with the corpus; `counts` (a Counts) is kept up to date.

    clean: refine (word vocab) or str.strip (subword vocab, which reads raw text).
    A pair is skipped when either side is a metadata line or blank. Files with
    different numbers of lines (of <seg> lines for XML) are an error, raised
    when the shorter one ends: zipping them would silently pair each sentence
    with the wrong translation.
    """
    counts = Counts() if counts is None else counts
    src, tgt, end = iter_sentences(src_path, flags[0]), iter_sentences(tgt_path, flags[1]), object()
    for number, ((_, s), (_, t)) in enumerate(itertools.zip_longest(src, tgt, fillvalue=(0, end)), 1):
        if s is end or t is end:
            rest = sum(1 for _ in (tgt if s is end else src))
            lengths = (number - 1, number + rest) if s is end else (number + rest, number - 1)
            unit = "<seg> lines" if _is_xml(src_path) else "lines"
            raise UserError(f"{src_path} has {lengths[0]} {unit} but {tgt_path} has {lengths[1]}; "
                            "the two files must be line-aligned translations of each other")
        if s is None or t is None:
            counts.metadata += 1
        elif s.strip() and t.strip():
            counts.pairs += 1
            yield clean(s), clean(t)
        else:
            counts.blank += 1
    if not counts.pairs:
        raise UserError(f"{src_path} and {tgt_path} hold no sentence pairs; "
                        f"check --{flags[0]} and --{flags[1]}")


def read_parallel(src_path, tgt_path, flags=("source_train", "target_train"), clean=refine):
    """iter_parallel() as two lists (source sentences, target sentences), with a line saying what was read."""
    counts = Counts()
    pairs = list(iter_parallel(src_path, tgt_path, flags, clean, counts))
    print(f"{src_path}: {counts.pairs} sentence pairs; skipped {counts.metadata} metadata and "
          f"{counts.blank} blank lines")
    return [s for s, _ in pairs], [t for _, t in pairs]


def evaluation_pairs(hp, src_vocab, tgt_vocab, keep_all=False, split="test"):
    """The test (or dev) split's cleaned source and reference sentences, as eval.py and dev evaluation score them:
    by default only the pairs whose sides have at most maxlen tokens, as the original evaluated; keep_all: every
    pair. src_vocab, tgt_vocab: the model's (their clean() and the lengths of their encode())."""
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


def unicode_problem(text):
    """Why `text` is not Unicode text that UTF-8 can hold, in a few words, or None: a lone UTF-16 surrogate, as
    JSON's "\\ud800" gives, or as Python decodes a command-line argument's bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate, U+{ord(text[e.start]):04X}, at character {e.start + 1}"
    return None

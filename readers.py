"""Corpus readers: IWSLT XML, IWSLT training tags, plain or gzipped text -> cleaned, aligned sentence pairs.

A reader is chosen by the file's name. Every problem with a file (missing,
not UTF-8, a damaged .gz, a malformed <seg> line, sides of different length)
is a UserError naming the file and, where there is one, the line.
"""
import gzip
import os
import zlib

import regex

from cli import UserError


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


def read_lines(path, flag):
    """Yields (line number, text) of a UTF-8 file, gunzipped when its name ends in .gz."""
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; fetch the --dataset corpus with download.py (python download.py "
                        f"iwslt2016 or multi30k) or pass the file's path with --{flag}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            yield from decode_lines(f, path)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a broken .gz
        raise UserError(f"{path}: cannot be read ({e}); check the file or pass another --{flag}") from None


def _is_xml(path):
    return os.path.basename(path).removesuffix(".gz").endswith(".xml")


def read_sentences(path, flag):
    """Reads one side of a corpus as [(line number, sentence or None)].

    The format follows the file name. IWSLT XML (`*.xml`): only `<seg>` lines
    are sentences, tags stripped. IWSLT `train.tags.*`: lines starting with `<`
    are talk metadata and come back as None. Anything else: plain text, one
    sentence per line. `flag` names the setting the path came from, for errors.
    """
    lines = read_lines(path, flag)
    if _is_xml(path):
        segs = []
        for n, line in lines:
            if "<seg" in line:
                found = _SEG.findall(line)  # each <seg> is a sentence, even two on one line
                if len(found) != line.count("<seg"):
                    raise UserError(f"{path}:{n}: malformed <seg> line (expected <seg id=\"N\"> text </seg> "
                                    "on one line); fix the file or fetch it again")
                segs += [(n, text) for text in found]
        return segs
    if os.path.basename(path).startswith("train.tags"):
        return [(n, None if line.startswith("<") else line) for n, line in lines]
    return list(lines)


def read_parallel(src_path, tgt_path, flags=("source_train", "target_train"), clean=refine):
    """Reads a parallel corpus in lockstep: returns (source sentences, target sentences), cleaned.

    clean: refine (word vocab) or str.strip (subword vocab, which reads raw text).
    A pair is skipped when either side is a metadata line or blank. Files with
    different numbers of lines (of <seg> lines for XML) are an error: zipping
    them would silently pair each sentence with the wrong translation.
    """
    src, tgt = read_sentences(src_path, flags[0]), read_sentences(tgt_path, flags[1])
    if len(src) != len(tgt):
        unit = "<seg> lines" if _is_xml(src_path) else "lines"
        raise UserError(f"{src_path} has {len(src)} {unit} but {tgt_path} has {len(tgt)}; "
                        "the two files must be line-aligned translations of each other")
    metadata = sum(s is None or t is None for (_, s), (_, t) in zip(src, tgt))
    pairs = [(clean(s), clean(t)) for (_, s), (_, t) in zip(src, tgt)
             if s and t and s.strip() and t.strip()]
    if not pairs:
        raise UserError(f"{src_path} and {tgt_path} hold no sentence pairs; "
                        f"check --{flags[0]} and --{flags[1]}")
    print(f"{src_path}: {len(pairs)} sentence pairs; skipped {metadata} metadata and "
          f"{len(src) - len(pairs) - metadata} blank lines")
    return [s for s, _ in pairs], [t for _, t in pairs]

"""Builds the vocabularies: raw training text -> <vocab_dir>/de.vocab.tsv and en.vocab.tsv.

Each file lists the four specials (count 1000000000, so they come first with
ids 0-3) and then every refined word of its side with its count, most
frequent first, ties in code-point order of the word. min_cnt is applied when
loading, not here, so one vocab serves every min_cnt.
"""
import collections
import json
import os

from tqdm import tqdm

import data_load
from hyperparams import Hyperparams, check_writable, parse_args, run, write_atomic

SPECIAL_COUNT = 1000000000  # the original's marker count for the specials


def count_words(sentences, desc):
    """Counter of the whitespace-separated words in `sentences`, with a progress bar."""
    counts = collections.Counter()
    for sentence in tqdm(sentences, desc=desc, unit=" sentences", mininterval=1.0):
        counts.update(sentence.split())
    return counts


def vocab_text(counts):
    """The vocab file's text: specials, then word<TAB>count by falling count, ties by word."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{w}\t{SPECIAL_COUNT}" for w in data_load.SPECIALS]
    lines += [f"{w}\t{c}" for w, c in ranked]  # refine deletes '<', so no word equals a special
    return "\n".join(lines) + "\n"


def main(argv):
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0])
    hp = Hyperparams(**explicit)
    check_writable(hp.vocab_dir, "vocab_dir")
    src, tgt = data_load.read_parallel(hp.source_train, hp.target_train)
    for sentences, name, side in ((src, data_load.SRC_VOCAB, "source"),
                                  (tgt, data_load.TGT_VOCAB, "target")):
        counts = count_words(sentences, f"counting {side} words")
        path = os.path.join(hp.vocab_dir, name)
        write_atomic(path, vocab_text(counts))
        kept = sum(c >= hp.min_cnt for c in counts.values())
        print(f"{path}: {len(counts)} words from {len(sentences)} sentences, "
              f"{kept} seen at least {hp.min_cnt} times (--min_cnt)")
    write_atomic(os.path.join(hp.vocab_dir, data_load.VOCAB_SOURCE),
                 json.dumps(data_load.vocab_source(hp), indent=2) + "\n")


if __name__ == "__main__":
    run(main)

"""Builds the vocabulary from the training text, into vocab_dir.

--vocab_type word (the original's): de.vocab.tsv and en.vocab.tsv. Each lists
the four specials (count 1000000000, so they come first with ids 0-3) and then
every refined word of its side with its count, most frequent first, ties in
code-point order of the word. min_cnt is applied when loading, not here, so
one vocab serves every min_cnt.

--vocab_type subword: subword.model, one SentencePiece unigram model of
vocab_size pieces learned from the raw German and English text together, with
the specials at ids 0-3.

Beside them, corpus.json names the training text and each vocab file's
sha256. The files are written under temporary names and renamed together,
corpus.json last: a full disk or a kill leaves the previous vocab whole, and
every script checks the files against corpus.json before using them.
"""
import collections
import io
import json
import os

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import sentencepiece
from tqdm import tqdm

import readers
import vocab
from cli import UserError, check_writable, run, write_files
from hyperparams import Hyperparams, parse_args
from vocab import BOS, EOS, PAD, UNK


SPECIAL_COUNT = 1000000000  # the original's marker count for the specials
# SentencePiece's result depends on its thread count; a constant, not the machine's core
# count, makes the same corpus give the same vocab everywhere.
SUBWORD_THREADS = 4


def count_words(sentences, desc):
    """Counter of the whitespace-separated words in `sentences`, with a progress bar."""
    counts = collections.Counter()
    for sentence in tqdm(sentences, desc=desc, unit=" sentences", mininterval=1.0):
        counts.update(sentence.split())
    return counts


def vocab_text(counts):
    """The vocab file's text: specials, then word<TAB>count by falling count, ties by word."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{w}\t{SPECIAL_COUNT}" for w in vocab.SPECIALS]
    lines += [f"{w}\t{c}" for w, c in ranked]  # refine deletes '<', so no word equals a special
    return "\n".join(lines) + "\n"


def word_vocabs(hp):
    """{path: contents} of the two word vocab files."""
    src, tgt = readers.read_parallel(hp.source_train, hp.target_train)
    contents = {}
    for sentences, corpus in ((src, hp.source_train), (tgt, hp.target_train)):
        if not any(sentences):  # every sentence was only digits and punctuation
            raise UserError(f"{corpus}: no word is left once the text is refined (only Latin letters and "
                            "apostrophes are kept); check the file, or use --vocab_type subword")
    for sentences, name, side in ((src, vocab.SRC_VOCAB, "source"), (tgt, vocab.TGT_VOCAB, "target")):
        counts = count_words(sentences, f"counting {side} words")
        path = os.path.join(hp.vocab_dir, name)
        contents[path] = vocab_text(counts)
        kept = sum(c >= hp.min_cnt for c in counts.values())
        print(f"{path}: {len(counts)} words from {len(sentences)} sentences, "
              f"{kept} seen at least {hp.min_cnt} times (--min_cnt)")
    return contents


def subword_model(sentences, vocab_size):
    """A serialized SentencePiece unigram model of vocab_size pieces learned from `sentences`."""
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size, model_type="unigram",
            character_coverage=1.0,  # every character of the corpus gets a piece: no <UNK> for rare letters
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, num_threads=SUBWORD_THREADS, minloglevel=2)
    except RuntimeError as e:  # e.g. "Vocabulary size too high (8000). Please set it to a value <= 1234."
        raise UserError(f"SentencePiece cannot build --vocab_size {vocab_size} pieces from this training text "
                        f"({str(e).rsplit('] ', 1)[-1].strip()}); pass a smaller --vocab_size") from None
    return model.getvalue()


def subword_vocab(hp):
    """{path: contents} of the subword model file."""
    src, tgt = readers.read_parallel(hp.source_train, hp.target_train, clean=str.strip)
    path = os.path.join(hp.vocab_dir, vocab.SUBWORD_MODEL)
    print(f"learning {hp.vocab_size} subword pieces from {len(src)} German and English sentences ...")
    model = subword_model(src + tgt, hp.vocab_size)
    subword = vocab.SubwordVocab(model, path)
    pieces = sum(map(len, subword.encode(src[:2000] + tgt[:2000]))) - 2 * min(len(src), 2000)
    words = sum(len(s.split()) for s in src[:2000] + tgt[:2000])
    print(f"{path}: {subword.size} pieces; {pieces / words:.2f} pieces per word on the first sentences")
    return {path: model}


def main(argv):
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0])
    hp = Hyperparams(**explicit)
    check_writable(hp.vocab_dir, "vocab_dir")
    contents = (subword_vocab if hp.vocab_type == "subword" else word_vocabs)(hp)
    manifest = vocab.vocab_manifest(hp, contents, previous=vocab.read_manifest(hp.vocab_dir))
    write_files({**contents, os.path.join(hp.vocab_dir, vocab.VOCAB_MANIFEST): json.dumps(manifest, indent=2) + "\n"})


if __name__ == "__main__":
    run(main)

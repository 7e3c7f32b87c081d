"""Builds the vocabulary from the training text, and writes the training pairs as id shards, into vocab_dir.

--vocab_type word (the original's): de.vocab.tsv and en.vocab.tsv. Each lists
the four specials (count 1000000000, so they come first with ids 0-3) and then
every refined word of its side with its count, most frequent first, ties in
code-point order of the word. min_cnt is applied when loading, not here, so
one vocab serves every min_cnt.

--vocab_type subword: subword.model, one SentencePiece unigram model of
vocab_size pieces learned from the raw German and English text together (from
a seeded random sample of --vocab_sample sentences when the corpus has more).

Then every training pair is encoded into ids_<vocab_type>/ shards (shards.py),
a chunk at a time: memory stays flat however large the corpus. With
--subword_alpha, each pair is also cut into sampled pieces once per epoch
(--num_epochs sets of shards, drawn from --seed): subword regularization.

Beside the vocab, corpus.json names the training text and each vocab file's
sha256. The files are written under temporary names and renamed together,
corpus.json last: a full disk or a kill leaves the previous vocab whole, and
every script checks the files against corpus.json before using them. Run
again on unchanged text with unchanged settings, prepro.py does nothing and
says so; a vocab still current is reused while only the shards are rewritten.
"""
import collections
import io
import json
import os
import random
import re

import cli

cli.import_tensorflow()  # before any module that imports TensorFlow: filters its start-up lines

import sentencepiece
from tqdm import tqdm

import readers
import shards
import vocab
from cli import parse_args, run
from files import check_writable, remove_orphans, write_files
from messages import UserError
from hyperparams import Hyperparams
from vocab import BOS, EOS, PAD, UNK


SPECIAL_COUNT = 1000000000  # the original's marker count for the specials
# SentencePiece's result depends on its thread count; a constant, not the machine's core
# count, makes the same corpus give the same vocab everywhere.
SUBWORD_THREADS = 4


def vocab_text(counts):
    """The vocab file's text: specials, then word<TAB>count by falling count, ties by word."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{w}\t{SPECIAL_COUNT}" for w in vocab.SPECIALS]
    lines += [f"{w}\t{c}" for w, c in ranked]  # refine deletes '<', so no word equals a special
    return "\n".join(lines) + "\n"


def word_vocabs(hp):
    """{path: contents} of the two word vocab files, counted in one pass over the training text."""
    counts, sentences = (collections.Counter(), collections.Counter()), 0
    pairs = readers.iter_parallel(hp.source_train, hp.target_train)
    for src, tgt in tqdm(pairs, desc="counting words", unit=" pairs", mininterval=1.0):
        counts[0].update(src.split())
        counts[1].update(tgt.split())
        sentences += 1
    contents = {}
    for side, name, corpus in zip(counts, (vocab.SRC_VOCAB, vocab.TGT_VOCAB), (hp.source_train, hp.target_train)):
        if not side:  # every sentence was only digits and punctuation
            raise UserError(f"{corpus}: no word is left once the text is refined (only Latin letters and "
                            "apostrophes are kept); check the file, or use --vocab_type subword")
        path = os.path.join(hp.vocab_dir, name)
        contents[path] = vocab_text(side)
        kept = sum(c >= hp.min_cnt for c in side.values())
        print(f"{path}: {len(side)} words from {sentences} sentences, "
              f"{kept} seen at least {hp.min_cnt} times (--min_cnt)")
    return contents


def word_encoders(contents):
    """The two vocab files' contents as WordVocabs of every word they list (min_cnt 1): the ids of the shards."""
    return tuple(vocab.WordVocab([line.partition("\t")[0] for line in text.splitlines()])
                 for text in contents.values())


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


def sample(items, size, rng):
    """A uniform random sample of `size` of the items (all of them, in order, if there are no more),
    drawn in one pass (reservoir sampling): memory holds the sample, not the items."""
    kept = []
    for i, item in enumerate(items):
        if i < size:
            kept.append(item)
        else:
            j = rng.randrange(i + 1)
            if j < size:
                kept[j] = item
    return kept


def subword_encoders(contents):
    """The subword model's contents as the (source, target) encoders: one joint vocab."""
    (path, model), = contents.items()
    subword = vocab.SubwordVocab(model, path)
    return subword, subword


def subword_vocab(hp):
    """{path: contents} of the subword model file, learned from a sample of the training text: the same
    number of German and English sentences, all of them when the corpus has at most --vocab_sample."""
    pairs = list(sample(readers.iter_parallel(hp.source_train, hp.target_train, clean=str.strip),
                        max(1, hp.vocab_sample // 2), random.Random(hp.seed)))
    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    path = os.path.join(hp.vocab_dir, vocab.SUBWORD_MODEL)
    print(f"learning {hp.vocab_size} subword pieces from {len(src)} German and English sentences ...")
    model = subword_model(src + tgt, hp.vocab_size)
    subword = vocab.SubwordVocab(model, path)
    pieces = sum(map(len, subword.encode(src[:2000] + tgt[:2000]))) - 2 * min(len(src), 2000)
    words = sum(len(s.split()) for s in src[:2000] + tgt[:2000])
    print(f"{path}: {subword.size} pieces; {pieces / words:.2f} pieces per word on the first sentences")
    return {path: model}


def id_pairs(hp, src_vocab, tgt_vocab, sampling):
    """Yields each training pair's ids (source ids, target ids, each ending in </S>), in the best segmentation
    and then in each of the sampled sets of `sampling` (shards.Sampling), read a chunk at a time."""
    counts = readers.Counts()
    pairs = readers.iter_parallel(hp.source_train, hp.target_train, clean=src_vocab.clean, counts=counts)
    with tqdm(desc="writing id shards", unit=" pairs", mininterval=1.0) as bar:
        for number, chunk in enumerate(shards.chunks(pairs, shards.PAIRS_PER_CHUNK)):
            src, tgt = [s for s, _ in chunk], [t for _, t in chunk]
            versions = [zip(src_vocab.encode(src), tgt_vocab.encode(tgt))]
            for sample in range(1, sampling.sets + 1):
                versions.append(zip(sampling.encode(src_vocab, src, sample, number),
                                    sampling.encode(tgt_vocab, tgt, sample, number)))
            yield from zip(*versions)
            bar.update(len(chunk))
    print(f"{hp.source_train}: {counts.pairs} sentence pairs; skipped {counts.metadata} metadata and "
          f"{counts.blank} blank lines")


def vocab_settings(hp):
    """The settings besides the training text that shape hp.vocab_type's vocab files."""
    return {"vocab_size": hp.vocab_size, "vocab_sample": hp.vocab_sample} if hp.vocab_type == "subword" else {}


def current_vocab(hp, corpus_sha256):
    """(the source and target encoders, the files' digest) of the vocab in vocab_dir if it is whole and was
    built from this training text with these settings (then it is reused), else None."""
    built = vocab.vocab_record(hp.vocab_dir) or {}  # a damaged one: the vocab is built anew
    if built.get("sha256") != corpus_sha256 or built.get("settings", {}).get(hp.vocab_type) != vocab_settings(hp):
        return None
    try:
        contents, digest, _ = vocab.read_vocab_files(hp)
    except UserError:
        return None
    if hp.vocab_type == "subword":
        return subword_encoders(contents), digest
    return tuple(vocab.WordVocab.load(path, 1, content) for path, content in contents.items()), digest


# The settings prepro.py reads (--help lists these)
SETTINGS = ("dataset", "source_train", "target_train", "vocab_dir", "vocab_type", "vocab_size", "min_cnt",
            "vocab_sample", "shard_pairs", "subword_alpha", "subword_nbest", "num_epochs", "seed", "preset")


def main(argv):
    explicit, _ = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS)
    hp = Hyperparams(**explicit)
    check_writable(hp.vocab_dir, "vocab_dir")
    remove_orphans(hp.vocab_dir, "|".join(map(re.escape, (vocab.SRC_VOCAB, vocab.TGT_VOCAB, vocab.SUBWORD_MODEL,
                                                          vocab.VOCAB_MANIFEST))))  # left by a killed prepro.py
    text_files = shards.text_files(hp)  # before the digest: a change while it is read shows at the next start
    corpus_sha256 = readers.corpus_digest(hp.source_train, hp.target_train)
    reused, contents, sampling = current_vocab(hp, corpus_sha256), {}, shards.Sampling(hp)
    if reused is None:
        contents = (subword_vocab if hp.vocab_type == "subword" else word_vocabs)(hp)
        encoders = word_encoders(contents) if hp.vocab_type == "word" else subword_encoders(contents)
        digest = shards.digest_of(contents.values())
    else:
        encoders, digest = reused
    provenance = {"corpus_sha256": corpus_sha256, "vocab_sha256": digest,
                  "vocab_type": hp.vocab_type, "shard_pairs": hp.shard_pairs, "sampling": sampling.settings()}
    if not contents and shards.current(hp, provenance):
        print(f"{hp.vocab_dir}: the vocab and the id shards are up to date with {hp.source_train} and "
              f"{hp.target_train} and these settings; nothing to do")
        return
    if not contents:
        print(f"{hp.vocab_dir}: the vocab is up to date with {hp.source_train} and {hp.target_train}; "
              "writing the id shards")
    manifest, shard_files = shards.write_shards(hp, id_pairs(hp, *encoders, sampling),
                                                {**provenance, "text_files": text_files}, sampling.sets)
    files = {**contents, shards.manifest_path(hp): json.dumps(manifest, indent=1) + "\n"}
    if contents:  # corpus.json last: it vouches for the vocab files
        files[os.path.join(hp.vocab_dir, vocab.VOCAB_MANIFEST)] = json.dumps(vocab.vocab_manifest(
            hp, contents, vocab.vocab_record(hp.vocab_dir), corpus_sha256, vocab_settings(hp)), indent=2) + "\n"
    write_files(files, written=shard_files)  # the shards first, the manifests last
    shards.remove_stale_shards(hp, manifest)
    sampled = (f", and {sampling.sets} sets of them cut into sampled pieces (--subword_alpha {hp.subword_alpha}, "
               f"one per epoch)" if sampling.sets else "")
    print(f"{shards.shard_dir(hp)}: {manifest['pairs']} pairs in {len(manifest['shards'])} shards{sampled}")


if __name__ == "__main__":
    run(main)

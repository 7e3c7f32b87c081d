"""Corpus readers, vocabularies and the tf.data input pipeline: raw text -> tokens -> ids -> batches.

Two kinds of vocabulary: the original's words (text refined to Latin letters,
one vocab per language, rare words -> <UNK>) and a joint German-English
SentencePiece subword vocab on the raw text, run in the TensorFlow graph by
tensorflow-text, so that translations keep punctuation, digits and case.
"""
import gzip
import hashlib
import json
import os
import zlib

import numpy as np
import regex
import tensorflow as tf
import tensorflow_text as tf_text

from cli import UserError, file_digest

SPECIALS = ("<PAD>", "<UNK>", "<S>", "</S>")  # the first four lines of every vocab file
PAD, UNK, BOS, EOS = range(4)  # their ids
SRC_VOCAB, TGT_VOCAB = "de.vocab.tsv", "en.vocab.tsv"  # --vocab_type word
SUBWORD_MODEL = "subword.model"  # --vocab_type subword: the SentencePiece model, shared by both sides

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


def _read_lines(path, flag):
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
    lines = _read_lines(path, flag)
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


def load_vocab(path, min_cnt):
    """Reads a vocab file of prepro.py: returns (word -> id, id -> word) of words seen >= min_cnt times."""
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; run prepro.py first (with the same --vocab_dir)")
    words = []
    for lineno, line in _read_lines(path, "vocab_dir"):
        word, tab, count = line.partition("\t")
        if not tab or not count.isdigit():
            raise UserError(f"{path}:{lineno}: expected word<TAB>count; rebuild the vocab with prepro.py")
        if int(count) >= min_cnt:
            words.append(word)
    if tuple(words[:4]) != SPECIALS:
        raise UserError(f"{path}: does not start with {', '.join(SPECIALS)}; rebuild the vocab with prepro.py")
    if len(words) == len(SPECIALS):  # a model that can only write <UNK>
        raise UserError(f"{path}: no word is seen at least --min_cnt {min_cnt} times; lower --min_cnt")
    return {w: i for i, w in enumerate(words)}, words


class WordVocab:
    """The original's vocabulary of one language: refined words seen at least min_cnt times."""

    clean = staticmethod(refine)  # what read_parallel applies to each raw sentence

    def __init__(self, words):
        """words: id -> word, starting with SPECIALS (load() reads them from prepro.py's file)."""
        self.words, self.word2id, self.size = list(words), {w: i for i, w in enumerate(words)}, len(words)

    @classmethod
    def load(cls, path, min_cnt):
        return cls(load_vocab(path, min_cnt)[1])

    def encode(self, sentences):
        """Sentences -> id lists: words -> ids, unknown words -> <UNK>, then </S>."""
        return [[self.word2id.get(w, UNK) for w in s.split()] + [EOS] for s in sentences]

    def tokens(self, ids):
        """Ids -> their words, specials included (for plots)."""
        return [self.words[i] for i in ids]

    def decode(self, rows):
        """Id rows (n, T) -> the sentences of their words before the first </S> (pads are skipped)."""
        return [" ".join(self.words[i] for i in _before_eos(row) if i != PAD) for row in rows]


class SubwordVocab:
    """The joint SentencePiece vocabulary, run by tensorflow-text: raw text <-> pieces, losslessly.

    prepro.py trains the model with the ids of SPECIALS (0-3), so ids mean the
    same in both kinds of vocab.
    """

    clean = staticmethod(str.strip)  # raw text: no refine step

    def __init__(self, model, path):
        """model: the serialized SentencePiece model (bytes), read from `path` (named in errors)."""
        try:
            self.tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
            self.size = int(self.tokenizer.vocab_size())
        except (tf.errors.OpError, ValueError):
            raise UserError(f"{path} is not a SentencePiece model; rebuild it with prepro.py") from None

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            return cls(f.read(), path)

    def encode(self, sentences, chunk=4096):
        """Sentences -> piece id lists, each ending in </S> (tokenized in the graph, a chunk at a time)."""
        ids = []
        for start in range(0, len(sentences), chunk):
            ids += self.tokenizer.tokenize(tf.constant(sentences[start:start + chunk])).to_list()
        return [row + [EOS] for row in ids]

    def tokens(self, ids):
        """Ids -> their pieces, specials included (for plots)."""
        return [p.decode("utf-8") for p in self.tokenizer.id_to_string(tf.constant(list(ids), tf.int32)).numpy()]

    def decode(self, rows):
        """Id rows (n, T) -> detokenized text of the pieces before the first </S>."""
        pieces = tf.ragged.constant([[i for i in _before_eos(row) if i != PAD] for row in rows],
                                    dtype=tf.int32, ragged_rank=1) if len(rows) else tf.zeros((0, 0), tf.int32)
        return [t.decode("utf-8") for t in self.tokenizer.detokenize(pieces).numpy()]


def ending_in_eos(row):
    """A decoder's id row without its pads, ending in </S> (added when the decoder stopped at its limit)."""
    ids = [int(i) for i in row if i != PAD]
    return ids if ids and ids[-1] == EOS else ids + [EOS]


def _before_eos(row):
    row = list(row)
    return row[:row.index(EOS)] if EOS in row else row


# Beside the vocab files, written after them: the training text they were built from and
# each file's sha256, so that a reader can tell a complete set from a mixed or damaged one.
VOCAB_MANIFEST = "corpus.json"


def vocab_files(hp):
    """The files prepro.py writes into vocab_dir for hp.vocab_type."""
    names = (SUBWORD_MODEL,) if hp.vocab_type == "subword" else (SRC_VOCAB, TGT_VOCAB)
    return [os.path.join(hp.vocab_dir, name) for name in names]


def vocab_digest(hp):
    """Identifies the vocab files in vocab_dir, so that a model can tell if they were rebuilt."""
    return file_digest(*vocab_files(hp))


def vocab_manifest(hp, contents, previous=None):
    """The manifest for vocab files {path: contents} built from hp's training text.

    Entries of `previous` for the other vocab type stay when they were built
    from the same text, so one vocab_dir can hold a word and a subword vocab.
    """
    corpus = file_digest(hp.source_train, hp.target_train)
    files = dict(previous["files"]) if previous and previous.get("sha256") == corpus else {}
    for path, content in contents.items():
        files[os.path.basename(path)] = hashlib.sha256(content.encode("utf-8") if isinstance(content, str)
                                                       else content).hexdigest()
    return {"source_train": hp.source_train, "target_train": hp.target_train, "sha256": corpus, "files": files}


def read_manifest(vocab_dir):
    """vocab_dir's manifest as prepro.py wrote it, or None if there is none."""
    path = os.path.join(vocab_dir, VOCAB_MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)):
        raise UserError(f"{path} is not the record prepro.py writes; run prepro.py again")
    return manifest


def check_vocab_files(hp):
    """Refuses vocab files that are missing, or not the complete set prepro.py last wrote."""
    for path in vocab_files(hp):
        if not os.path.isfile(path):
            kind = " --vocab_type subword" if hp.vocab_type == "subword" else ""
            raise UserError(f"{path} not found; run prepro.py{kind} first (with the same --vocab_dir)")
    manifest = read_manifest(hp.vocab_dir)
    manifest_path = os.path.join(hp.vocab_dir, VOCAB_MANIFEST)
    if manifest is None:
        raise UserError(f"{manifest_path} not found, so the vocab files beside it cannot be checked (they were "
                        "written by an older version, or in part); run prepro.py again")
    for path in vocab_files(hp):
        if manifest["files"].get(os.path.basename(path)) != file_digest(path):
            raise UserError(f"{path} is not the file {manifest_path} lists (the vocab was changed, or prepro.py "
                            "was stopped while writing it); run prepro.py again")


def check_vocab_source(hp):
    """Refuses a vocab that prepro.py built from another training text than hp's."""
    built = read_manifest(hp.vocab_dir) or {}
    if built.get("sha256") != file_digest(hp.source_train, hp.target_train):
        raise UserError(f"the vocab in {hp.vocab_dir} was built from {built.get('source_train')} and "
                        f"{built.get('target_train')}, not from the --source_train {hp.source_train} and "
                        f"--target_train {hp.target_train} given now (their contents differ); run prepro.py "
                        "with these settings or pass the --vocab_dir built from them")


def load_vocabs(hp):
    """The source and target vocab objects train and eval use (one object for a joint subword vocab),
    once they are checked to be the complete set prepro.py wrote."""
    check_vocab_files(hp)
    if hp.vocab_type == "subword":
        vocab = SubwordVocab.load(vocab_files(hp)[0])
        return vocab, vocab
    src, tgt = vocab_files(hp)
    return WordVocab.load(src, hp.min_cnt), WordVocab.load(tgt, hp.min_cnt)


def pad(seqs, width):
    """Right-pads id lists with <PAD> into an int32 array (n, width)."""
    out = np.full((len(seqs), width), PAD, dtype=np.int32)
    for i, seq in enumerate(seqs):
        out[i, :len(seq)] = seq
    return out


def create_data(src_sents, tgt_sents, src_vocab, tgt_vocab, maxlen):
    """Returns X (n, T1), Y (n, T2) int32 ids and the kept sentences.

    With a maxlen, as the original: a pair is kept only if both sides have at
    most maxlen ids (</S> included), and both are padded to exactly maxlen.
    With maxlen None every pair is kept and each side is padded to its longest.
    """
    x, y = src_vocab.encode(src_sents), tgt_vocab.encode(tgt_sents)
    keep = [i for i in range(len(x)) if maxlen is None or max(len(x[i]), len(y[i])) <= maxlen]
    width1 = maxlen or max(map(len, x), default=1)
    width2 = maxlen or max(map(len, y), default=1)
    return (pad([x[i] for i in keep], width1), pad([y[i] for i in keep], width2),
            [src_sents[i] for i in keep], [tgt_sents[i] for i in keep])


def load_train_data(hp, src_vocab, tgt_vocab):
    """Training ids X, Y (n, maxlen), read from source_train/target_train."""
    src, tgt = read_parallel(hp.source_train, hp.target_train, clean=src_vocab.clean)
    x, y, _, _ = create_data(src, tgt, src_vocab, tgt_vocab, hp.maxlen)
    print(f"{len(x)} of {len(src)} training pairs fit --maxlen {hp.maxlen}; {len(src) - len(x)} longer ones dropped")
    return x, y


def load_test_data(hp, src_vocab, tgt_vocab, keep_all=False, split="test"):
    """Test (or dev) source ids X (n, T1) with the cleaned source and reference sentences beside them.

    By default only pairs that pass the training maxlen filter, as the original
    evaluated; keep_all keeps every sentence (cut to maxlen ids for a model
    with learned positions, which exist only up to maxlen).
    """
    flags = (f"source_{split}", f"target_{split}")
    src, tgt = read_parallel(getattr(hp, flags[0]), getattr(hp, flags[1]), flags=flags, clean=src_vocab.clean)
    x, _, src, tgt = create_data(src, tgt, src_vocab, tgt_vocab, None if keep_all else hp.maxlen)
    if not len(x):
        raise UserError(f"no {split} pair in {getattr(hp, flags[0])} fits --maxlen {hp.maxlen}; "
                        "pass --all to evaluate every sentence")
    return (x if hp.sinusoid else x[:, :hp.maxlen]), src, tgt


def _lengths(ids):
    """(n, T) padded ids -> (n,) real lengths (works on NumPy arrays and tensors)."""
    return (ids != PAD).sum(-1) if isinstance(ids, np.ndarray) else tf.reduce_sum(tf.cast(ids != PAD, tf.int32), -1)


def bucket_plan(maxlen, batch_tokens):
    """About 8 length buckets up to maxlen: (boundaries, pairs per batch in each bucket).

    Bucket i holds pairs whose longer side has a length in [boundaries[i-1], boundaries[i]);
    its batches hold batch_tokens // (longest length in the bucket) pairs, so no
    batch exceeds batch_tokens tokens on either side, padding included.
    """
    step = max(1, -(-maxlen // 8))
    boundaries = list(range(step + 1, maxlen + 1, step))
    longest = [b - 1 for b in boundaries] + [maxlen]
    return boundaries, [max(1, batch_tokens // n) for n in longest]


def count_batches(x, y, *, batch_size, batch_tokens=0):
    """How many batches train_batches() yields per epoch."""
    if not batch_tokens:
        return len(x) // batch_size
    boundaries, sizes = bucket_plan(x.shape[1], batch_tokens)
    buckets = np.searchsorted(boundaries, np.maximum(_lengths(x), _lengths(y)), side="right")
    counts = np.bincount(buckets, minlength=len(sizes))
    return int(sum(-(-c // s) for c, s in zip(counts, sizes)))


def train_batches(x, y, *, batch_size, seed, batch_tokens=0):
    """One epoch of shuffled (src, tgt) batches.

    Without batch_tokens: exactly batch_size pairs each, padded to maxlen, the
    last partial batch dropped (as the original). With batch_tokens: pairs of
    similar length batched together (tf.data bucketing), each batch padded only
    to its longest sentence and holding at most batch_tokens tokens per side;
    every pair is used. The order depends only on `seed` (train.py passes seed +
    epoch), so a run resumed at an epoch boundary sees the batches an
    uninterrupted run would.
    """
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=False)
    if not batch_tokens:
        return pairs.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    boundaries, sizes = bucket_plan(x.shape[1], batch_tokens)
    trimmed = pairs.map(lambda a, b: (a[:_lengths(a)], b[:_lengths(b)]), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
    return (trimmed.bucket_by_sequence_length(lambda a, b: tf.maximum(tf.shape(a)[0], tf.shape(b)[0]),
                                              boundaries, sizes, padding_values=(PAD, PAD))
            .prefetch(tf.data.AUTOTUNE))


def eval_batches(x, batch_size):
    """Source batches in file order, the last partial batch included."""
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).prefetch(tf.data.AUTOTUNE)

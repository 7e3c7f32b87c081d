"""Vocabularies: the four special tokens, the original's word vocab and the joint SentencePiece subword vocab.

prepro.py builds them into vocab_dir with corpus.json, a manifest of each
file's sha256; open_vocabs() checks the files against it before use.
"""
import hashlib
import io
import os
import threading

import sentencepiece

from files import file_digest, read_record
from messages import UserError
from readers import decode_lines, read_lines, refine


SPECIALS = ("<PAD>", "<UNK>", "<S>", "</S>")  # the first four lines of every vocab file
PAD, UNK, BOS, EOS = range(4)  # their ids
SRC_VOCAB, TGT_VOCAB = "de.vocab.tsv", "en.vocab.tsv"  # --vocab_type word
SUBWORD_MODEL = "subword.model"  # --vocab_type subword: the SentencePiece model, shared by both sides


def load_vocab(path, min_cnt, content=None):
    """Reads a vocab file of prepro.py (or its `content`, bytes read from it): returns (word -> id, id -> word)
    of words seen >= min_cnt times."""
    if content is None and not os.path.isfile(path):
        raise UserError(f"{path} not found; run prepro.py first (with the same --vocab_dir)")
    words = []
    lines = read_lines(path, "vocab_dir") if content is None else decode_lines(io.BytesIO(content).readlines(), path)
    for lineno, line in lines:
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
    def load(cls, path, min_cnt, content=None):
        return cls(load_vocab(path, min_cnt, content)[1])

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
    """The joint SentencePiece vocabulary: raw text <-> pieces, losslessly.

    prepro.py trains the model with the ids of SPECIALS (0-3), so ids mean the
    same in both kinds of vocab. The scripts run it on the host with the
    sentencepiece package (the training pipeline reads id shards, and decoders
    hand back id arrays): importing tensorflow-text would load all its op
    libraries into every process. export.py runs the same model inside
    its graph with tensorflow-text's ops (graph_tokenizer).
    """

    clean = staticmethod(str.strip)  # raw text: no refine step

    def __init__(self, model, path):
        """model: the serialized SentencePiece model (bytes), read from `path` (named in errors)."""
        self.model = model
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=model)
        except RuntimeError:
            raise UserError(f"{path} is not a SentencePiece model; rebuild it with prepro.py") from None
        self.size = self.processor.get_piece_size()

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            return cls(f.read(), path)

    def encode(self, sentences):
        """Sentences -> piece id lists, each ending in </S>."""
        sentences = list(sentences)
        ids = self.processor.encode(sentences, out_type=int) if sentences else []  # ([] is not a sentence)
        return [row + [EOS] for row in ids]

    def sample(self, sentences, *, alpha, nbest, seed):
        """Sentences -> piece id lists each ending in </S>, every sentence cut into pieces drawn at random
        (subword regularization, Kudo 2018): among its `nbest` best segmentations (0: all), each with
        probability proportional to its likelihood ** alpha. The same seed gives the same pieces.

        SentencePiece draws from a generator of the thread that calls it, seeded from the process-wide seed
        when the thread first samples; a new thread for each call makes its draws depend on `seed` alone.
        """
        sentences, drawn = list(sentences), []

        def draw():
            sentencepiece.set_random_generator_seed(seed)
            drawn.extend(self.processor.encode(sentences, out_type=int, enable_sampling=True, alpha=alpha,
                                               nbest_size=nbest or -1, num_threads=1) if sentences else [])

        thread = threading.Thread(target=draw)
        thread.start()
        thread.join()
        return [row + [EOS] for row in drawn]

    def tokens(self, ids):
        """Ids -> their pieces, specials included (for plots)."""
        return [self.processor.id_to_piece(int(i)) for i in ids]

    def decode(self, rows):
        """Id rows (n, T) -> detokenized text of the pieces before the first </S>."""
        pieces = [[int(i) for i in _before_eos(row) if i != PAD] for row in rows]
        return self.processor.decode(pieces) if pieces else []  # (decode([]) is one empty string)

    def graph_tokenizer(self):
        """The same model as tensorflow-text's tokenizer: ops that a SavedModel can hold."""
        import tensorflow as tf  # here, not at the top: vocabs serve the CTranslate2 engine, without TensorFlow
        import tensorflow_text as tf_text  # only export.py needs its ops

        return tf_text.SentencepieceTokenizer(model=self.model, out_type=tf.int32)


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


def vocab_manifest(hp, contents, previous, corpus_sha256, settings):
    """The manifest for vocab files {path: contents} built from hp's training text (digest corpus_sha256)
    with `settings` (those of prepro.vocab_settings).

    Entries of `previous` for the other vocab type stay when they were built
    from the same text, so one vocab_dir can hold a word and a subword vocab.
    """
    same_text = previous and previous.get("sha256") == corpus_sha256
    files = dict(previous["files"]) if same_text else {}
    built_with = dict(previous.get("settings", {})) if same_text else {}
    for path, content in contents.items():
        files[os.path.basename(path)] = hashlib.sha256(content.encode("utf-8") if isinstance(content, str)
                                                       else content).hexdigest()
    built_with[hp.vocab_type] = settings
    return {"source_train": hp.source_train, "target_train": hp.target_train, "sha256": corpus_sha256,
            "files": files, "settings": built_with}


# corpus.json, as files.read_record checks it
VOCAB_RECORD = {"source_train": str, "target_train": str, "sha256": str, "files": {str: str}, "settings?": {str: dict}}


def vocab_record(vocab_dir, fix=None):
    """vocab_dir's corpus.json as prepro.py wrote it, or None if there is none; a damaged one is a UserError
    ending in `fix`, or with fix None taken for absent (prepro.py writes it anew)."""
    return read_record(os.path.join(vocab_dir, VOCAB_MANIFEST), VOCAB_RECORD, fix)


def read_vocab_files(hp):
    """hp's vocab files, each read once, refused unless they are the complete set prepro.py last wrote: their
    contents {path: bytes}, their digest together (what vocab_digest() computes) and corpus.json."""
    for path in vocab_files(hp):
        if not os.path.isfile(path):
            kind = " --vocab_type subword" if hp.vocab_type == "subword" else ""
            raise UserError(f"{path} not found; run prepro.py{kind} first (with the same --vocab_dir)")
    manifest = vocab_record(hp.vocab_dir, fix="run prepro.py again")
    manifest_path = os.path.join(hp.vocab_dir, VOCAB_MANIFEST)
    if manifest is None:
        raise UserError(f"{manifest_path} not found, so the vocab files beside it cannot be checked (they were "
                        "written by an older version, or in part); run prepro.py again")
    contents, together = {}, hashlib.sha256()
    for path in vocab_files(hp):
        with open(path, "rb") as f:
            contents[path] = f.read()
        if manifest["files"].get(os.path.basename(path)) != hashlib.sha256(contents[path]).hexdigest():
            raise UserError(f"{path} is not the file {manifest_path} lists (the vocab was changed, or prepro.py "
                            "was stopped while writing it); run prepro.py again")
        together.update(contents[path])
    return contents, together.hexdigest(), manifest


def check_vocab_source(hp, corpus_sha256, built):
    """Refuses a vocab that prepro.py built from another training text than hp's (whose digest is given);
    built: vocab_dir's corpus.json (read_vocab_files())."""
    if built.get("sha256") != corpus_sha256:
        raise UserError(f"the vocab in {hp.vocab_dir} was built from {built.get('source_train')} and "
                        f"{built.get('target_train')}, not from the --source_train {hp.source_train} and "
                        f"--target_train {hp.target_train} given now (their contents differ); run prepro.py "
                        "with these settings or pass the --vocab_dir built from them")


def open_vocabs(hp):
    """The source and target vocab objects train and eval use (one object for a joint subword vocab), once
    they are checked to be the complete set prepro.py wrote; their files' digest (vocab_digest()); and
    corpus.json. Each file is read once."""
    contents, digest, record = read_vocab_files(hp)
    if hp.vocab_type == "subword":
        path, = contents
        vocab = SubwordVocab(contents[path], path)
        return vocab, vocab, digest, record
    src, tgt = (WordVocab.load(path, hp.min_cnt, content) for path, content in contents.items())
    return src, tgt, digest, record


def load_vocabs(hp):
    """open_vocabs()'s source and target vocab objects."""
    return open_vocabs(hp)[:2]

"""The training pairs as id shards: prepro.py writes them once, train.py streams them.

vocab_dir/ids_<vocab_type>/ holds train-00000.tfrecord, train-00001.tfrecord,
...: TFRecord files of tf.train.Example records, one per sentence pair, with
two int64 lists, "source" and "target", the pair's ids ending in </S>. No
padding and no length filter: train.py drops the pairs longer than its maxlen
as it reads. Word ids are those of the whole word ranking (every word seen
once or more); since a vocab file lists its words most frequent first, the
words a --min_cnt keeps are the ranking's first ids, and train.py maps the
others to <UNK>. So one set of shards serves every maxlen and min_cnt.

With --subword_alpha (subword regularization), prepro.py also writes one
more set of shards per training epoch, sample01-00000.tfrecord, ...: the same
pairs, each sentence cut into pieces drawn at random (shards.Sampling) instead
of its best segmentation. Epoch e trains on set e (the sets are reused in turn
when train.py runs more epochs than prepro.py wrote). Drawn once, at prepro
time, the samples are files like the rest: training reads them at the same
speed, and a run resumed mid-epoch sees the same pieces as one that was not
stopped.

Beside the shards, manifest.json records what made them (the training text's
and the vocab files' digests, the vocab type, the settings that shaped the
ids), and for each shard its name, pair count, sha256 and histogram of pair
lengths (the longer side's, </S> included), from which train.py counts an
epoch's batches without reading the shards. The shards are written under
temporary names and renamed once all are complete; the manifest comes last.
"""
import collections
import hashlib
import os
import re

import tensorflow as tf

import readers
from files import discard, file_digest, read_record, remove_orphans
from messages import UserError
from vocab import UNK

MANIFEST = "manifest.json"
FORMAT = 1  # of the records and the manifest
PAIRS_PER_CHUNK = 4096  # pairs encoded and written at a time: memory does not grow with the corpus


def shard_dir(hp):
    return os.path.join(hp.vocab_dir, f"ids_{hp.vocab_type}")


def shard_name(index, sample=0):
    """The file of shard `index` of the best segmentation (sample 0) or of sampled set `sample`."""
    return f"sample{sample:02d}-{index:05d}.tfrecord" if sample else f"train-{index:05d}.tfrecord"


SHARD_NAMES = r"(?:train|sample\d{2,})-\d{5}\.tfrecord"  # every shard_name()


class Sampling:
    """Subword regularization: how prepro.py draws the pieces of the sampled shard sets.

    Set k's chunk c of PAIRS_PER_CHUNK pairs is cut by SentencePiece's sampler
    seeded from (seed, k, c) alone, so the samples do not depend on how the
    text was read, and the same settings give the same files.
    """

    def __init__(self, hp):
        self.alpha, self.nbest, self.seed = hp.subword_alpha, hp.subword_nbest, hp.seed
        self.sets = hp.num_epochs if hp.subword_alpha else 0

    def settings(self):
        """What the manifest records of the sampling (None: no sampled sets)."""
        return ({"alpha": self.alpha, "nbest": self.nbest, "sets": self.sets, "seed": self.seed}
                if self.sets else None)

    def encode(self, encoder, sentences, sample, chunk):
        """Sampled set `sample`'s ids of chunk number `chunk`'s `sentences`."""
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}/{sample}/{chunk}".encode()).digest()[:4], "big")
        return encoder.sample(sentences, alpha=self.alpha, nbest=self.nbest, seed=seed)


def record(src, tgt):
    """One pair's ids (lists of ints) as a serialized tf.train.Example."""
    feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=ids))
               for name, ids in (("source", src), ("target", tgt))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def chunks(iterable, size):
    """Lists of up to `size` consecutive items of `iterable`, the last one what is left (prepro.py's chunks of
    pairs; train.py's groups of --accumulate batches, one optimizer step each)."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ShardWriter:
    """Writes pairs of ids into shards of `per_shard` pairs each, under temporary names in `directory`."""

    def __init__(self, directory, per_shard, sample=0):
        self.directory, self.per_shard, self.sample = directory, per_shard, sample
        self.shards, self.writer, self.temporary = [], None, []

    def add(self, src, tgt):
        if self.writer is None or self.shards[-1]["pairs"] == self.per_shard:
            self._next_shard()
        self.writer.write(record(src, tgt))
        entry = self.shards[-1]
        entry["pairs"] += 1
        length = max(len(src), len(tgt))
        entry["lengths"][length] = entry["lengths"].get(length, 0) + 1

    def _next_shard(self):
        self.close()
        name = shard_name(len(self.shards), self.sample)
        self.temporary.append(os.path.join(self.directory, f"{name}.tmp{os.getpid()}"))
        self.writer = tf.io.TFRecordWriter(self.temporary[-1])
        self.shards.append({"name": name, "pairs": 0, "lengths": {}})

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self):
        """Closes the last shard; returns the shards' manifest entries and {final path: temporary file}."""
        self.close()
        for entry, tmp in zip(self.shards, self.temporary):
            entry["sha256"], entry["bytes"] = file_digest(tmp), os.path.getsize(tmp)
            entry["lengths"] = {str(k): v for k, v in sorted(entry["lengths"].items())}
        return self.shards, {os.path.join(self.directory, e["name"]): t for e, t in zip(self.shards, self.temporary)}


def write_shards(hp, id_pairs, provenance, sets=0):
    """Streams `id_pairs` into shards under temporary names in hp's shard directory: each item is one
    pair's ids (source ids, target ids) in the best segmentation, followed by its ids in each of `sets`
    sampled sets. Returns their manifest (`provenance`, the shards and the sampled sets' shards) and
    {final path: temporary file}: the caller renames them into place with cli.write_files, together with
    the vocab files and the manifest, so that a failure before leaves the old shards whole."""
    directory = shard_dir(hp)
    os.makedirs(directory, exist_ok=True)
    remove_orphans(directory, f"{SHARD_NAMES}|{MANIFEST}")  # left by a prepro.py that was killed
    writers = [ShardWriter(directory, hp.shard_pairs, sample) for sample in range(sets + 1)]
    try:
        for versions in id_pairs:
            for writer, (src, tgt) in zip(writers, versions, strict=True):
                writer.add(src, tgt)
        finished = [writer.finish() for writer in writers]
    except BaseException as e:  # also a user error in the text, or Ctrl-C: no temporary file stays behind
        for writer in writers:
            writer.close()
            for tmp in writer.temporary:
                discard(tmp)
        if isinstance(e, (OSError, tf.errors.OpError)):  # a full disk, a read-only directory
            why = getattr(e, "strerror", None) or getattr(e, "message", None) or e
            raise UserError(f"cannot write the id shards in {directory} ({why}); free some space or choose "
                            "another --vocab_dir (nothing was changed)") from None
        raise
    entries = finished[0][0]
    manifest = {**provenance, "format": FORMAT, "pairs": sum(e["pairs"] for e in entries), "shards": entries}
    if sets:
        manifest["samples"] = [entries for entries, _ in finished[1:]]
    return manifest, {path: tmp for _, temporary in finished for path, tmp in temporary.items()}


def remove_stale_shards(hp, manifest):
    """Deletes the shard files in hp's shard directory that `manifest` does not list (of a larger corpus)."""
    names = {entry["name"] for entry in all_shards(manifest)}
    for name in os.listdir(shard_dir(hp)):
        if re.fullmatch(SHARD_NAMES, name) and name not in names:
            discard(os.path.join(shard_dir(hp), name))


def manifest_path(hp):
    return os.path.join(shard_dir(hp), MANIFEST)


def all_shards(manifest):
    """The manifest entries of every shard: the best segmentation's, then each sampled set's."""
    return manifest["shards"] + [entry for entries in manifest.get("samples", []) for entry in entries]


# manifest.json, as files.read_record checks it
SHARD_RECORD = [{"name": str, "pairs": int, "sha256": str, "bytes": int, "lengths": {str: int}}]
MANIFEST_RECORD = {"format": int, "corpus_sha256": str, "vocab_sha256": str, "vocab_type": str, "shard_pairs?": int,
                   "text_files?": [[(str, int)]], "pairs": int, "shards": SHARD_RECORD,
                   "sampling?": ({"alpha": float, "nbest": int, "sets": int, "seed": int}, None),
                   "samples?": [SHARD_RECORD]}
AGAIN = "run prepro.py with the same settings again"


def shard_manifest(hp, fix=None):
    """The shards' manifest as prepro.py wrote it, or None if there is none. A damaged one, or one of another
    format, is a UserError ending in `fix`, or with fix None taken for absent (prepro.py writes it anew)."""
    manifest = read_record(manifest_path(hp), MANIFEST_RECORD, fix)
    if manifest is not None and manifest["format"] != FORMAT:
        if fix is None:
            return None
        raise UserError(f"{manifest_path(hp)} was written by another version of prepro.py; {fix}")
    return manifest


def current(hp, provenance):
    """Whether hp's shards were written for `provenance` and are all intact."""
    manifest = shard_manifest(hp)
    return (manifest is not None and all(manifest.get(k) == v for k, v in provenance.items())
            and all(shard_intact(hp, entry) for entry in all_shards(manifest)))


def shard_intact(hp, entry, quick=False):
    """Whether a shard is the file its manifest entry describes: its sha256, or (quick) only its size,
    when the records' own checksums, checked as they are read, stand for the rest."""
    path = os.path.join(shard_dir(hp), entry["name"])
    if not os.path.isfile(path):
        return False
    return os.path.getsize(path) == entry["bytes"] if quick else file_digest(path) == entry["sha256"]


def text_files(hp):
    """What identifies the training text cheaply: each file's real path, size and modification time."""
    for path, flag in ((hp.source_train, "source_train"), (hp.target_train, "target_train")):
        readers.check_file(path, flag)
    return [[os.path.realpath(path), os.stat(path).st_size, os.stat(path).st_mtime_ns]
            for path in (hp.source_train, hp.target_train)]


def known_corpus_digest(hp, manifest):
    """The training text's sha256 (readers.corpus_digest): from the shards' `manifest` (shard_manifest()) while
    the files are those prepro.py read (same path, size and modification time), else read in full. A large
    corpus is then not read at every start of train.py."""
    if text_files(hp) == (manifest or {}).get("text_files"):
        return manifest["corpus_sha256"]
    return readers.corpus_digest(hp.source_train, hp.target_train)


def check_shards(hp, manifest, provenance):
    """Refuses (one line) hp's shards unless prepro.py wrote them, whole, for the vocab and training text of
    `provenance`; manifest: theirs (shard_manifest()). Only the shards' sizes are compared here: TFRecord checks
    each record's checksum as train.py reads it (a damaged shard stops training with DataLossError)."""
    path = manifest_path(hp)
    if manifest is None:
        raise UserError(f"{path} not found (the training pairs have no id shards yet); {AGAIN}")
    for key, words in (("corpus_sha256", "another training text"), ("vocab_sha256", "another vocab"),
                       ("vocab_type", "another --vocab_type")):
        if manifest.get(key) != provenance[key]:
            raise UserError(f"the id shards in {shard_dir(hp)} were made from {words} than the one given now; "
                            f"{AGAIN}")
    sampling = manifest.get("sampling") or {}
    if hp.subword_alpha and (sampling.get("alpha"), sampling.get("nbest")) != (hp.subword_alpha, hp.subword_nbest):
        raise UserError(f"the id shards in {shard_dir(hp)} hold no segmentations sampled with --subword_alpha "
                        f"{hp.subword_alpha} --subword_nbest {hp.subword_nbest}; run prepro.py with these settings")
    for entry in all_shards(manifest) if hp.subword_alpha else manifest["shards"]:
        if not shard_intact(hp, entry, quick=True):
            raise UserError(f"{os.path.join(shard_dir(hp), entry['name'])} is missing or is not the shard {path} "
                            f"lists (changed, or prepro.py was stopped while writing); {AGAIN}")


def histogram(entries):
    """{pair length: pairs} over the manifest entries of some shards."""
    total = collections.Counter()
    for entry in entries:
        total.update({int(k): v for k, v in entry["lengths"].items()})
    return total


def parse(records, vocab_sizes):
    """A batch of serialized records -> ragged source and target ids (int32); word ids past a vocab's
    size (words rarer than its --min_cnt) become <UNK>."""
    spec = {name: tf.io.RaggedFeature(tf.int64) for name in ("source", "target")}
    parsed = tf.io.parse_example(records, spec)
    sides = []
    for name, size in zip(("source", "target"), vocab_sizes):
        ids = tf.cast(parsed[name], tf.int32)
        sides.append(tf.ragged.map_flat_values(lambda v: tf.where(v < size, v, UNK), ids))
    return tuple(sides)


def digest_of(contents):
    """sha256 of bytes or texts one after the other, as file_digest() of files holding them."""
    digest = hashlib.sha256()
    for content in contents:
        digest.update(content if isinstance(content, bytes) else content.encode("utf-8"))
    return digest.hexdigest()

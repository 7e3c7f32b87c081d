"""Sentence pairs as ids, and the tf.data batches training and decoding run on.

    training: id shards (prepro.py) -> shard_pairs -> drop longer than maxlen -> shuffle buffer
              -> train_batches (fixed size, or length buckets of a few shapes); TrainingSet splits the shards
              among workers
    dev loss:  readers.evaluation_pairs (raw text -> cleaned pairs) -> create_data (ids + </S>, padded to maxlen)
    decoding:  engine.encode (ids + </S>) -> pad to a multiple of shapes.SHAPE_STEP (inference.source_batch)
"""
import collections
import os

import numpy as np
import tensorflow as tf

import shards
from messages import UserError
from shapes import pad
from vocab import PAD

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


def _lengths(ids):
    """(n, T) padded ids -> (n,) real lengths (works on NumPy arrays and tensors)."""
    return (ids != PAD).sum(-1) if isinstance(ids, np.ndarray) else tf.reduce_sum(tf.cast(ids != PAD, tf.int32), -1)


def bucket_plan(maxlen, batch_tokens):
    """About 8 length buckets up to maxlen: (widths, pairs per batch in each bucket).

    Bucket i holds the pairs whose longer side has widths[i - 1] < length <= widths[i].
    Its batches are batch_tokens // widths[i] pairs, both sides padded to widths[i]:
    no batch exceeds batch_tokens tokens on either side, padding included, and an
    epoch has only len(widths) batch shapes, whatever the corpus.
    """
    step = max(1, -(-maxlen // 8))
    widths = list(range(step, maxlen, step)) + [maxlen]
    return widths, [max(1, batch_tokens // width) for width in widths]


def pair_length(src, tgt):
    """A pair's length as batching sees it: its longer side's ids, </S> included."""
    return tf.maximum(tf.shape(src)[0], tf.shape(tgt)[0])


def count_batches(lengths, *, maxlen, batch_size, batch_tokens=0):
    """How many batches train_batches() makes of pairs with these lengths ({length: pairs})."""
    kept = {length: count for length, count in lengths.items() if length <= maxlen}
    if not batch_tokens:
        return sum(kept.values()) // batch_size
    widths, sizes = bucket_plan(maxlen, batch_tokens)
    counts = np.zeros(len(widths), dtype=np.int64)
    for length, count in kept.items():
        counts[np.searchsorted(widths, length, side="left")] += count
    return int(sum(-(-int(c) // s) for c, s in zip(counts, sizes)))


def array_pairs(x, y):
    """Padded id arrays X, Y (n, T) as a dataset of pairs without padding, and their {length: pairs}."""
    lengths = np.maximum(_lengths(x), _lengths(y))
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).map(lambda a, b: (a[:_lengths(a)], b[:_lengths(b)]))
    return pairs, collections.Counter(lengths.tolist())


def shard_pairs(paths, *, seed, vocab_sizes):
    """The pairs of id shard files (shards.py) as a dataset: the files in an order drawn from `seed`,
    four read at a time, their records interleaved."""
    files = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string, shape=(len(paths),)))
    files = files.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=False)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(4, len(paths))),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pairs = records.batch(1024).map(lambda r: shards.parse(r, vocab_sizes), num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True).unbatch()
    return pairs.map(lambda a, b: (tf.identity(a), tf.identity(b)))  # unbatched ragged rows -> plain tensors


def train_batches(pairs, *, maxlen, batch_size, seed, batch_tokens=0, shuffle_pairs=100000, total=None):
    """One epoch of shuffled (src, tgt) batches of `pairs` (unpadded id pairs) up to maxlen ids.

    Pairs longer than maxlen are dropped; the rest pass through a shuffle
    buffer of shuffle_pairs pairs (all of a small corpus). Without batch_tokens:
    exactly batch_size pairs each, padded to maxlen, the last partial batch
    dropped (as the original). With batch_tokens: pairs of similar length
    batched together (tf.data bucketing, see bucket_plan), and every pair used:
    each bucket's last batch is filled up with empty rows (all <PAD>, which
    count for nothing in the loss), so that it has the shape of the bucket's
    other batches. A compiled step (--jit) then compiles once per bucket, not
    once per batch. `total`: empty batches are added up to this many (an input
    pipeline with fewer pairs than another keeps step with it). The order
    depends only on `seed` (train.py passes seed + epoch), so a run resumed
    mid-epoch can skip to the batch it stopped at.
    """
    pairs = (pairs.filter(lambda a, b: pair_length(a, b) <= maxlen)
             .shuffle(shuffle_pairs, seed=seed, reshuffle_each_iteration=False))
    if not batch_tokens:
        batches = pairs.padded_batch(batch_size, padded_shapes=([maxlen], [maxlen]), padding_values=(PAD, PAD),
                                     drop_remainder=True)
        empty_shape = (batch_size, maxlen)
    else:
        widths, sizes = bucket_plan(maxlen, batch_tokens)

        def fill(a, b):  # (n, width) -> (the bucket's batch size, width), n <= that size
            missing = [[0, tf.maximum(1, batch_tokens // tf.shape(a)[1]) - tf.shape(a)[0]], [0, 0]]
            return tf.pad(a, missing, constant_values=PAD), tf.pad(b, missing, constant_values=PAD)

        # pad_to_bucket_boundary pads bucket i to boundaries[i] - 1 = widths[i]; the bucket
        # past the last boundary stays empty, as no pair is longer than maxlen.
        batches = (pairs.bucket_by_sequence_length(pair_length, [w + 1 for w in widths], sizes + [1],
                                                   padding_values=(PAD, PAD), pad_to_bucket_boundary=True)
                   .map(fill, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
        empty_shape = (sizes[0], widths[0])
    if total is not None:
        empty = tf.fill(empty_shape, PAD)
        batches = batches.concatenate(tf.data.Dataset.from_tensors((empty, empty)).repeat()).take(total)
    return untuned(batches.prefetch(tf.data.AUTOTUNE))


def untuned(dataset):
    """`dataset` without tf.data's autotuning: its AUTOTUNE parallelism stays at min(16, CPU cores).

    With autotuning on (TensorFlow 2.21), deleting an iterator often waited
    for the autotuner's thread to wake for its next pass, which comes at most
    a minute after the last: at the end of an epoch, training stood still for
    up to 43 s (in 5 to 8 of 12 or 13 epochs of the multi30k_cpu preset). These
    pipelines cost a small part of a step and gain nothing from tuning.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class TrainingSet:
    """The id shards of prepro.py split among input pipelines (one per worker): each pipeline reads only
    its own shards, and every pipeline yields the same number of batches per epoch.

    With R replicas in sync (devices over all workers), each replica's batch is
    1/R of the global batch --batch_size or --batch_tokens, so that a step
    sees as many pairs (or tokens) as on one device. A pipeline feeding L local
    replicas hands them its batches in turn; one with fewer pairs than another
    ends its epoch with empty batches (no tokens: no loss, no gradient), so
    that all take batches_per_epoch steps and every pair is used once.

    With --subword_alpha, epoch e reads the e-th sampled set of shards (the
    sets in turn, when there are fewer sets than epochs); every epoch has as
    many batches as the set that makes the most, the others ending in empty
    batches.
    """

    def __init__(self, hp, manifest, vocab_sizes, pipelines=1, replicas=1):
        self.hp, self.vocab_sizes, self.local = hp, vocab_sizes, max(1, replicas // pipelines)
        self.batch_size = max(1, hp.batch_size // replicas)
        self.batch_tokens = hp.batch_tokens // replicas
        if hp.batch_tokens and self.batch_tokens < hp.maxlen:
            raise UserError(f"--batch_tokens {hp.batch_tokens} split over {replicas} replicas cannot hold one pair "
                            f"of --maxlen {hp.maxlen}; raise it to at least {hp.maxlen * replicas}")
        directory = shards.shard_dir(hp)
        self.sets = manifest["samples"] if hp.subword_alpha else [manifest["shards"]]
        # parts[pipeline][set]: the shard files of one set that one pipeline reads
        self.parts = [[[os.path.join(directory, e["name"]) for e in entries[p::pipelines]] for entries in self.sets]
                      for p in range(pipelines)]
        self.batches_per_epoch = max(
            -(-count_batches(shards.histogram(entries[p::pipelines]), maxlen=hp.maxlen, batch_size=self.batch_size,
                             batch_tokens=self.batch_tokens) // self.local)
            for entries in self.sets for p in range(pipelines))
        everything = shards.histogram(self.sets[0])
        self.pairs = sum(count for length, count in everything.items() if length <= hp.maxlen)
        self.dropped = sum(everything.values()) - self.pairs

    def batches(self, seed, pipeline=0, done=0, epoch=1):
        """The batches of `pipeline` in epoch `epoch` (from 1), in the order drawn from `seed`, from step
        `done` on."""
        pairs = shard_pairs(self.parts[pipeline][(epoch - 1) % len(self.sets)], seed=seed,
                            vocab_sizes=self.vocab_sizes)
        batches = train_batches(pairs, maxlen=self.hp.maxlen, batch_size=self.batch_size, seed=seed,
                                batch_tokens=self.batch_tokens, shuffle_pairs=self.hp.shuffle_pairs,
                                total=self.batches_per_epoch * self.local)
        return batches.skip(done * self.local)

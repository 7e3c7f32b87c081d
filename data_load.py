"""Sentence pairs as ids, and the tf.data batches training and decoding run on.

    raw text -> readers.read_parallel -> vocab.encode -> ids + </S> -> drop longer than maxlen -> pad
    -> train_batches (shuffled; fixed size, or length buckets of a few shapes) / eval_batches (in file order)
"""
import numpy as np
import tensorflow as tf

from cli import UserError
from readers import read_parallel
from vocab import PAD

# Decoding pads each batch of source sentences to a multiple of this many ids, not
# to its own longest: a handful of distinct shapes instead of one per length.
SHAPE_STEP = 8


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


def within_positions(ids, hp):
    """Source ids (n, T1) cut to maxlen for a model with learned positions, which exist only up to maxlen
    (unchanged for sinusoid ones, which exist for any length); NumPy arrays or tensors."""
    return ids if hp.sinusoid else ids[:, :hp.maxlen]


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
    return within_positions(x, hp), src, tgt


def _lengths(ids):
    """(n, T) padded ids -> (n,) real lengths (works on NumPy arrays and tensors)."""
    return (ids != PAD).sum(-1) if isinstance(ids, np.ndarray) else tf.reduce_sum(tf.cast(ids != PAD, tf.int32), -1)


def round_up(length):
    """length rounded up to a multiple of SHAPE_STEP (ints or integer tensors)."""
    return -(-length // SHAPE_STEP) * SHAPE_STEP


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


def count_batches(x, y, *, batch_size, batch_tokens=0):
    """How many batches train_batches() yields per epoch."""
    if not batch_tokens:
        return len(x) // batch_size
    widths, sizes = bucket_plan(x.shape[1], batch_tokens)
    buckets = np.searchsorted(widths, np.maximum(_lengths(x), _lengths(y)), side="left")
    counts = np.bincount(buckets, minlength=len(sizes))
    return int(sum(-(-c // s) for c, s in zip(counts, sizes)))


def train_batches(x, y, *, batch_size, seed, batch_tokens=0):
    """One epoch of shuffled (src, tgt) batches.

    Without batch_tokens: exactly batch_size pairs each, padded to maxlen, the
    last partial batch dropped (as the original). With batch_tokens: pairs of
    similar length batched together (tf.data bucketing, see bucket_plan), and
    every pair used: each bucket's last batch is filled up with empty rows
    (all <PAD>, which count for nothing in the loss), so that it has the shape
    of the bucket's other batches. A compiled step (--jit) then compiles once
    per bucket, not once per batch. The order depends only on `seed` (train.py
    passes seed + epoch), so a run resumed at an epoch boundary sees the
    batches an uninterrupted run would.
    """
    pairs = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=False)
    if not batch_tokens:
        return pairs.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    widths, sizes = bucket_plan(x.shape[1], batch_tokens)
    trimmed = pairs.map(lambda a, b: (a[:_lengths(a)], b[:_lengths(b)]), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)

    def fill(a, b):  # (n, width) -> (the bucket's batch size, width), n <= that size
        missing = [[0, tf.maximum(1, batch_tokens // tf.shape(a)[1]) - tf.shape(a)[0]], [0, 0]]
        return tf.pad(a, missing, constant_values=PAD), tf.pad(b, missing, constant_values=PAD)

    # pad_to_bucket_boundary pads bucket i to boundaries[i] - 1 = widths[i]; the bucket
    # past the last boundary stays empty, as no pair is longer than maxlen.
    return (trimmed.bucket_by_sequence_length(lambda a, b: tf.maximum(tf.shape(a)[0], tf.shape(b)[0]),
                                              [w + 1 for w in widths], sizes + [1], padding_values=(PAD, PAD),
                                              pad_to_bucket_boundary=True)
            .map(fill, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def eval_batches(x, batch_size):
    """Source batches in file order, the last partial batch included, each cut to its longest
    sentence rounded up to a multiple of SHAPE_STEP (so that decoding meets few distinct shapes)."""
    def trim(src):
        return src[:, :tf.minimum(round_up(tf.reduce_max(_lengths(src))), tf.shape(src)[1])]

    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(trim).prefetch(tf.data.AUTOTUNE)

"""Sentence pairs as ids, and the tf.data batches training and decoding run on.

    raw text -> readers.read_parallel -> vocab.encode -> ids + </S> -> drop longer than maxlen -> pad
    -> train_batches (shuffled; fixed size, or length buckets) / eval_batches (in file order)
"""
import numpy as np
import tensorflow as tf

from cli import UserError
from readers import read_parallel
from vocab import PAD


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

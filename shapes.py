"""The shapes id batches take: padding, and the few widths that decoding, scoring and the export run on.

Decoding pads each batch of source sentences to a multiple of SHAPE_STEP ids,
not to its own longest, and the TensorFlow engine fills a batch up to a few
numbers of sentences (round_rows): a handful of distinct shapes to trace and
run instead of one per length and size. (TensorFlow keeps what it made for
each shape, its oneDNN kernels and their buffers, as long as the process
runs: a server that met every batch size grew for hours.) data_load (training and dev batches), decoding, inference
and export all take these rules from here.
"""
import numpy as np
import tensorflow as tf

from vocab import PAD

SHAPE_STEP = 8
# A batch of ids of any size and length: the signature of the compiled functions that decode or score batches.
IDS = tf.TensorSpec((None, None), tf.int32)


def pad(seqs, width):
    """Right-pads id lists with <PAD> into an int32 array (n, width)."""
    out = np.full((len(seqs), width), PAD, dtype=np.int32)
    for i, seq in enumerate(seqs):
        out[i, :len(seq)] = seq
    return out


def round_up(length):
    """length rounded up to a multiple of SHAPE_STEP (ints or integer tensors)."""
    return -(-length // SHAPE_STEP) * SHAPE_STEP


def round_rows(count):
    """A batch's number of sentences rounded up: to a power of two up to SHAPE_STEP, to a multiple of it
    beyond (1, 2, 4, 8, 16, 24, ...)."""
    return 1 << (count - 1).bit_length() if count <= SHAPE_STEP else round_up(count)

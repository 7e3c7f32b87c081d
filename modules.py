"""Building blocks of the Transformer ("Attention Is All You Need", Vaswani et al., 2017).

Shape letters used in every comment below:
    N  batch size          T1  source length       T2  target length
    C  model width         h   attention heads     V   vocabulary size
    Tq, Tk  query and key lengths of one attention call

Mask convention: bool tensors, True where attention is allowed. They are built
only by padding_mask, query_mask and causal_mask, from token ids (pad id 0),
never from embedding values (the original's masks broke once positional
encodings made pad vectors non-zero).

The attention and the layers around it are written here rather than taken
from keras.layers.MultiHeadAttention because they are what this project
teaches; Dense and LayerNormalization come from Keras, and Dropout is Keras's
layer with a faster mask (see dropout()).
"""
import math

import keras
import tensorflow as tf

from vocab import EOS, PAD, UNK


LAYER_NORM_EPSILON = 1e-8  # the original's value


def padding_mask(ids):
    """(N, Tk) int ids -> (N, 1, 1, Tk) bool: True where the key is a real token."""
    return (ids != PAD)[:, None, None, :]


def query_mask(ids):
    """(N, Tq) int ids -> (N, 1, Tq, 1) bool: True where the query is a real token."""
    return (ids != PAD)[:, None, :, None]


def causal_mask(length):
    """-> (1, 1, T, T) bool: True where query position i may see key position j, i.e. j <= i."""
    positions = tf.range(length)
    return (positions[:, None] >= positions[None, :])[None, None]


def sinusoid(length, units, start=0):
    """Sinusoid position table (T, C) float32 for positions start .. start + T - 1 (paper 3.5).

    PE(pos, 2i) = sin(pos / 10000^(2i/C)) and PE(pos, 2i+1) = cos(pos / 10000^(2i/C)),
    computed for any length, so sentences longer than maxlen get positions too.
    """
    pos = tf.cast(tf.range(start, start + length), tf.float32)[:, None]  # (T, 1)
    dims = tf.range(units)
    rates = tf.pow(10000.0, tf.cast(2 * (dims // 2), tf.float32) / units)  # (C,)
    angles = pos / rates  # (T, C)
    return tf.where(dims % 2 == 0, tf.sin(angles), tf.cos(angles))


def label_smoothing(labels, depth, epsilon):
    """(N, T) int ids -> (N, T, V) target distributions (1 - eps) * onehot + eps / V (paper 5.4)."""
    return tf.one_hot(labels, depth) * (1.0 - epsilon) + epsilon / tf.cast(depth, tf.float32)


def smoothed_cross_entropy(logits, labels, epsilon):
    """Cross-entropy against label_smoothing(labels, V, epsilon), without building that (N, T, V) tensor.

    logits (N, T, V) float32, labels (N, T) int -> (N, T). With q the smoothed
    targets, -sum_v q_v log softmax(logits)_v = logsumexp(logits) - (1 - eps) *
    logits[label] - eps * mean(logits), and its gradient is softmax(logits) - q.
    Written out by hand because the library's op needs q as a dense tensor and
    keeps its own (N, T, V) gradient from the forward pass on: with a vocab of
    thousands these are the largest tensors of a training step.
    """
    @tf.custom_gradient
    def xent(logits):
        lse = tf.reduce_logsumexp(logits, axis=-1)  # (N, T)
        picked = tf.gather(logits, labels, batch_dims=2)  # (N, T): the label's logit
        loss = lse - (1.0 - epsilon) * picked - epsilon * tf.reduce_mean(logits, axis=-1)

        def gradient(upstream):  # (N, T) -> (N, T, V): upstream * (softmax - q)
            depth = tf.shape(logits)[-1]
            hot = tf.one_hot(labels, depth, on_value=1.0 - epsilon, off_value=0.0)
            return upstream[..., None] * (tf.exp(logits - lse[..., None]) - hot - epsilon / tf.cast(depth, tf.float32))

        return loss, gradient

    return xent(logits)


def loss_and_accuracy(logits, tgt, epsilon, count=None):
    """Label-smoothed cross-entropy and accuracy over the non-pad target positions.

    logits (N, T2, V), tgt ids (N, T2) -> two float32 scalars: sums over this
    batch's real positions divided by `count` (default: their number; with
    several replicas, the number in the global batch). Computed in float32
    whatever the model's compute dtype.
    """
    logits = tf.cast(logits, tf.float32)
    real = tf.cast(tgt != PAD, tf.float32)  # (N, T2)
    xent = smoothed_cross_entropy(logits, tgt, epsilon)  # (N, T2)
    count = tf.maximum(tf.reduce_sum(real) if count is None else count, 1.0)
    hits = tf.cast(tf.argmax(logits, axis=-1, output_type=tgt.dtype) == tgt, tf.float32)
    return tf.reduce_sum(xent * real) / count, tf.reduce_sum(hits * real) / count


def rdrop_kl(first, second, tgt):
    """R-Drop's regulariser: the symmetric KL divergence between two passes' predictions, summed.

    first, second: logits (N, T2, V) of the same pairs under different dropout;
    tgt ids (N, T2). -> float32 scalar: sum over the real target positions of
    (KL(p1 || p2) + KL(p2 || p1)) / 2 = sum_v (p1 - p2) (log p1 - log p2) / 2.
    """
    log_p, log_q = (tf.nn.log_softmax(tf.cast(x, tf.float32), axis=-1) for x in (first, second))
    kl = 0.5 * tf.reduce_sum((tf.exp(log_p) - tf.exp(log_q)) * (log_p - log_q), axis=-1)  # (N, T2)
    return tf.reduce_sum(kl * tf.cast(tgt != PAD, tf.float32))


class Embedding(keras.layers.Layer):
    """Token ids -> vectors, scaled by sqrt(C); the pad row is always zero (paper 3.4)."""

    def __init__(self, *, vocab_size, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.table = self.add_weight(shape=(vocab_size, units), initializer="glorot_uniform",
                                     name="table")  # (V, C)

    def call(self, ids):
        """(N, T) int ids -> (N, T, C)."""
        x = tf.gather(self.table, ids)  # (N, T, C)
        real = tf.cast(ids != PAD, x.dtype)[..., None]  # (N, T, 1): zero vector (and gradient) for pads
        return x * real * math.sqrt(self.units)


class TiedOutput(keras.layers.Layer):
    """Logits from the embedding table itself, plus a bias per word: (N, T, C), (V, C) -> (N, T, V).

    A float32 layer, so that inside it Keras reads the table in float32 even
    under a 16-bit policy (read by the caller, it would arrive rounded).
    """

    def __init__(self, *, vocab_size, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="bias")  # (V,)

    def call(self, hidden, table):
        # As one (N·T, C) x (C, V) product: a batched (N, T, C) x (V, C)^T one would broadcast the
        # table over the N sentences, and its gradient would hold one (V, C) table per sentence.
        flat = tf.reshape(tf.cast(hidden, tf.float32), (-1, tf.shape(hidden)[-1]))  # (N·T, C)
        logits = tf.matmul(flat, table, transpose_b=True) + self.bias  # (N·T, V)
        return tf.reshape(logits, tf.concat([tf.shape(hidden)[:-1], tf.shape(table)[:1]], 0))  # (N, T, V)


class PositionalEncoding(keras.layers.Layer):
    """Adds position information: sinusoid, or a learned table of maxlen rows (paper 3.5)."""

    def __init__(self, *, units, maxlen, learned, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.table = (self.add_weight(shape=(maxlen, units), initializer="glorot_uniform", name="table")
                      if learned else None)  # (maxlen, C)

    def call(self, x, start=0):
        """(N, T, C) at positions start .. start + T - 1 -> (N, T, C)."""
        length = tf.shape(x)[1]
        table = (sinusoid(length, self.units, start) if self.table is None
                 else self.table[start:start + length])  # (T, C)
        return x + tf.cast(table, x.dtype)


def dropout(x, rate, seed):
    """x with each element zeroed with probability `rate` and the others scaled by 1 / (1 - rate); the mask
    is a function of `seed`, a (2,) int32 tensor.

    Written here rather than taken from tf.nn.experimental.stateless_dropout
    for speed: that op draws a float per element in x's dtype, and on a CPU
    drawing the numbers is most of a dropout's cost (a quarter of the
    multi30k_cpu preset's training step went to its dropouts). This draws one
    32-bit integer per two elements and keeps an element where its 16-bit
    half is at least rate * 2^16, so the rate is exact to 1/65,536.
    """
    size = tf.size(x)
    words = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.int32)
    halves = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
    keep = tf.reshape(halves >= tf.constant(min(round(rate * 65536), 65535), tf.uint16), tf.shape(x))
    return tf.where(keep, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


class Dropout(keras.layers.Dropout):
    """Keras's Dropout layer with the mask drawn by dropout() above, one element per input element (no
    noise_shape). Given a seed at call time (a (2,) int32 tensor), its mask is a function of that seed;
    given none, it draws a new seed at every call, as Keras's layer does. A block whose activations are
    computed again in the backward pass (model.recomputed) must drop the same units both times, so there
    each dropout is given its seed.
    """

    def __init__(self, rate, noise_shape=None, **kwargs):
        if noise_shape is not None:  # refused rather than ignored
            raise ValueError(f"modules.Dropout draws one mask element per input element; got noise_shape {noise_shape}")
        super().__init__(rate, **kwargs)

    def call(self, inputs, training=False, seed=None):
        if not training or not self.rate:
            return inputs
        if seed is None:  # Keras's next seed (int64 state), cast as its TensorFlow backend casts it for stateless ops
            seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        return dropout(inputs, self.rate, seed)


class WordDropout(keras.layers.Layer):
    """Target word dropout: in training, each word of the decoder's input (not <S> or padding) becomes
    <UNK> with probability `rate`, so that the decoder learns to lean on the source more than on the words
    it has written. Its random state starts from `seed` rather than from Keras's global generator, so adding
    it leaves the model's initial weights as they were."""

    def __init__(self, rate, seed, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training=False):
        """(N, T2) decoder input ids -> the same ids, some words replaced by <UNK> in training."""
        if not training:
            return ids
        dropped = keras.random.uniform(tf.shape(ids), seed=self.seed_generator) < self.rate
        return tf.where(dropped & (ids > EOS), tf.constant(UNK, ids.dtype), ids)


def fold_seed(seed, index):
    """The seed of part `index` of what `seed` is given to (one per dropout, per block), or None."""
    return None if seed is None else tf.random.experimental.stateless_fold_in(seed, index)


def _optional_dropout(rate):
    """A Dropout layer, or at rate 0 a pass-through that creates no random state.

    (Every Dropout draws a seed when it is made; one more would shift the seeds of
    all later layers, and with them the weights the original setup starts from.)
    """
    return Dropout(rate) if rate else (lambda x, training=False, seed=None: x)


class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention with a residual connection and layer norm (paper 3.2).

    Post-norm (the paper's): norm(x + attention(x)). Pre-norm (pre_norm=True):
    x + attention(norm(x)), the queries (and a self-attention's keys) normalised,
    the residual path left alone, which trains stably at higher learning rates.

    Unlike the original: Q, K and V are linear projections (it applied a ReLU),
    and the concatenated heads pass through an output projection (it had none).
    """

    def __init__(self, *, units, num_heads, dropout_rate, residual_dropout=0.0, pre_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.pre_norm = pre_norm
        self.num_heads = num_heads
        self.depth = units // num_heads  # C/h
        self.project_q = keras.layers.Dense(units, name="q")
        self.project_k = keras.layers.Dense(units, name="k")
        self.project_v = keras.layers.Dense(units, name="v")
        self.project_out = keras.layers.Dense(units, name="out")
        self.dropout = Dropout(dropout_rate)
        self.residual_dropout = _optional_dropout(residual_dropout)
        self.norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)

    def build(self, queries_shape):
        """Makes the weights from the width C alone (keys, values and queries all have it)."""
        width = (None, None, queries_shape[-1])
        for layer in (self.project_q, self.project_k, self.project_v, self.project_out, self.norm):
            layer.build(width)

    def _split_heads(self, x):
        """(N, T, C) -> (N, h, T, C/h)."""
        shape = tf.shape(x)
        x = tf.reshape(x, (shape[0], shape[1], self.num_heads, self.depth))  # (N, T, h, C/h)
        return tf.transpose(x, (0, 2, 1, 3))

    def keys_values(self, keys):
        """keys (N, Tk, C) -> projected keys and values, each (N, h, Tk, C/h).

        Split from call() so that a decoder can compute them once and cache them.
        """
        return self._split_heads(self.project_k(keys)), self._split_heads(self.project_v(keys))

    def inputs(self, x):
        """What the projections see of hidden states x (N, T, C): norm(x) with pre-norm, else x itself."""
        return self.norm(x) if self.pre_norm else x

    def call(self, queries, keys=None, *, attention_mask, query_mask=None, keys_values=None, training=False,
             return_weights=False, seed=None):
        """queries (N, Tq, C), keys (N, Tk, C) -> (N, Tq, C), and the weights (N, h, Tq, Tk) if asked.

        keys None: self-attention, the keys are the queries (as inputs() gives them).
        attention_mask: bool, broadcastable to (N, h, Tq, Tk), True where a query may see a key.
        query_mask: bool (N, 1, Tq, 1) or None; rows of padded queries get zero weights.
        keys_values: instead of keys, keys and values projected before by keys_values() (each
        (N, h, Tk, C/h)): a decoder's cache, or the encoder output's, computed once per sentence.
        seed: None, or the (2,) int32 seed the dropout masks come from (see Dropout).
        """
        inputs = self.inputs(queries)
        # 1. project keys and values (N, h, Tk, C/h), unless given; queries, split into heads
        k, v = keys_values if keys_values is not None else self.keys_values(inputs if keys is None else keys)
        q = self._split_heads(self.project_q(inputs))  # (N, h, Tq, C/h)
        # 2. scaled scores; masking and softmax in float32, whatever the compute dtype
        scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(self.depth)  # (N, h, Tq, Tk)
        scores = tf.where(attention_mask, tf.cast(scores, tf.float32), -1e9)
        weights = tf.nn.softmax(scores, axis=-1)  # (N, h, Tq, Tk)
        # 3. padded queries attend to nothing (the original's query masking)
        if query_mask is not None:
            weights *= tf.cast(query_mask, weights.dtype)
        weights = self.dropout(weights, training=training, seed=fold_seed(seed, 0))
        # 4. weighted sum of values, heads concatenated, output projection
        out = tf.matmul(tf.cast(weights, v.dtype), v)  # (N, h, Tq, C/h)
        out = tf.transpose(out, (0, 2, 1, 3))  # (N, Tq, h, C/h)
        out = tf.reshape(out, tf.shape(queries))  # (N, Tq, C)
        # 5. residual connection (with the paper's dropout of the sublayer output), layer norm if post-norm
        out = queries + self.residual_dropout(self.project_out(out), training=training, seed=fold_seed(seed, 1))
        out = out if self.pre_norm else self.norm(out)
        return (out, weights) if return_weights else out


class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward C -> inner (ReLU) -> C with a residual connection and layer norm (paper 3.3):
    norm(x + ff(x)) post-norm, x + ff(norm(x)) pre-norm; ff_dropout drops inner activations.

    The original wrote it as two conv1d layers of kernel size 1: the same matrix
    product at every position, which Dense computes as one matmul.
    """

    def __init__(self, *, units, inner_units, residual_dropout=0.0, ff_dropout=0.0, pre_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.pre_norm = pre_norm
        self.inner = keras.layers.Dense(inner_units, activation="relu", name="inner")
        self.outer = keras.layers.Dense(units, name="outer")
        self.residual_dropout = _optional_dropout(residual_dropout)
        self.ff_dropout = _optional_dropout(ff_dropout)
        self.norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON)

    def build(self, x_shape):
        """Makes the weights from the width C alone."""
        width = (None, None, x_shape[-1])
        self.inner.build(width)
        self.outer.build((None, None, self.inner.units))
        self.norm.build(width)

    def call(self, x, training=False, seed=None):
        """(N, T, C) -> (N, T, C); seed: None, or the (2,) int32 seed the dropout masks come from."""
        inner = self.inner(self.norm(x) if self.pre_norm else x)  # (N, T, 4C)
        inner = self.ff_dropout(inner, training=training, seed=fold_seed(seed, 0))
        out = x + self.residual_dropout(self.outer(inner), training=training, seed=fold_seed(seed, 1))
        return out if self.pre_norm else self.norm(out)

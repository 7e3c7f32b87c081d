"""The encoder-decoder Transformer and its greedy decoders.

    src (N, T1) ids -> encoder -> enc (N, T1, C)
    <S> + tgt shifted right (N, T2) -> decoder (attends to enc) -> logits (N, T2, V)

Decoding adds one word per step. cached_greedy_decoder() runs the decoder on
the newest position only, keeping each layer's self-attention keys and values
from earlier steps and the encoder's cross-attention keys and values; the
simple greedy_decoder() reruns it on the whole prefix, and is kept as the
reference the cached one must match word for word.
"""
import keras
import tensorflow as tf

from data_load import BOS, EOS, PAD
from hyperparams import PRECISIONS
from modules import (Embedding, FeedForward, MultiHeadAttention, PositionalEncoding,
                     causal_mask, padding_mask, query_mask)

FF_MULTIPLIER = 4  # inner feed-forward width = 4C, as the original and the paper


class EncoderBlock(keras.layers.Layer):
    """Self-attention over the source, then feed-forward."""

    def __init__(self, *, units, num_heads, dropout_rate, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = MultiHeadAttention(units=units, num_heads=num_heads,
                                                 dropout_rate=dropout_rate, name="self_attention")
        self.feed_forward = FeedForward(units=units, inner_units=FF_MULTIPLIER * units,
                                        name="feed_forward")

    def call(self, x, src, training=False):
        """x (N, T1, C), src ids (N, T1) -> (N, T1, C)."""
        x = self.self_attention(x, x, attention_mask=padding_mask(src), query_mask=query_mask(src),
                                training=training)
        return self.feed_forward(x)


class DecoderBlock(keras.layers.Layer):
    """Causal self-attention, attention over the encoder output, then feed-forward."""

    def __init__(self, *, units, num_heads, dropout_rate, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = MultiHeadAttention(units=units, num_heads=num_heads,
                                                 dropout_rate=dropout_rate, name="self_attention")
        self.cross_attention = MultiHeadAttention(units=units, num_heads=num_heads,
                                                  dropout_rate=dropout_rate, name="cross_attention")
        self.feed_forward = FeedForward(units=units, inner_units=FF_MULTIPLIER * units,
                                        name="feed_forward")

    def call(self, y, enc, tgt_in, src, training=False):
        """y (N, T2, C), enc (N, T1, C), ids tgt_in (N, T2) and src (N, T1) -> (N, T2, C)."""
        self_mask = padding_mask(tgt_in) & causal_mask(tf.shape(tgt_in)[1])  # (N, 1, T2, T2)
        y = self.self_attention(y, y, attention_mask=self_mask, query_mask=query_mask(tgt_in), training=training)
        y = self.cross_attention(y, enc, attention_mask=padding_mask(src), query_mask=query_mask(tgt_in),
                                 training=training)
        return self.feed_forward(y)

    def step(self, y, tokens, cache, enc_kv, src):
        """The newest position only: y (N, 1, C), ids so far tokens (N, t), cache (keys, values) of
        the t - 1 earlier positions, each (N, h, t - 1, C/h), enc_kv from encoder_keys_values()
        -> y (N, 1, C) and the cache grown to t positions. Equals call() at position t - 1.
        """
        token = tokens[:, -1:]  # (N, 1)
        k, v = self.self_attention.keys_values(y)  # (N, h, 1, C/h)
        cache = (tf.concat([cache[0], k], axis=2), tf.concat([cache[1], v], axis=2))  # (N, h, t, C/h)
        # The causal mask's last row lets position t - 1 see every position so far.
        y = self.self_attention.attend(y, *cache, attention_mask=padding_mask(tokens), query_mask=query_mask(token))
        y = self.cross_attention.attend(y, *enc_kv, attention_mask=padding_mask(src), query_mask=query_mask(token))
        return self.feed_forward(y), cache


class Transformer(keras.Model):
    """Encoder-decoder Transformer; call((src, tgt_in)) -> logits (N, T2, V)."""

    def __init__(self, *, src_vocab_size, tgt_vocab_size, hidden_units, num_blocks, num_heads,
                 dropout_rate, sinusoid, maxlen, **kwargs):
        super().__init__(**kwargs)
        blocks = dict(units=hidden_units, num_heads=num_heads, dropout_rate=dropout_rate)
        positions = dict(units=hidden_units, max_len=maxlen, learned=not sinusoid)
        self.src_embedding = Embedding(vocab_size=src_vocab_size, units=hidden_units, name="src_embedding")
        self.src_positions = PositionalEncoding(**positions, name="src_positions")
        self.src_dropout = keras.layers.Dropout(dropout_rate)
        # Blocks are attributes, not a list: Keras 3 keeps lists in a wrapper that
        # tf.train.Checkpoint does not see, so their weights would not be saved.
        self.num_blocks = num_blocks
        for i in range(num_blocks):
            setattr(self, f"encoder_{i}", EncoderBlock(**blocks, name=f"encoder_{i}"))
        self.tgt_embedding = Embedding(vocab_size=tgt_vocab_size, units=hidden_units, name="tgt_embedding")
        self.tgt_positions = PositionalEncoding(**positions, name="tgt_positions")
        self.tgt_dropout = keras.layers.Dropout(dropout_rate)
        for i in range(num_blocks):
            setattr(self, f"decoder_{i}", DecoderBlock(**blocks, name=f"decoder_{i}"))
        # float32 logits whatever the policy: the softmax over V is where 16 bits would hurt.
        self.output_projection = keras.layers.Dense(tgt_vocab_size, dtype="float32", name="output_projection")

    def encode(self, src, training=False):
        """src ids (N, T1) -> (N, T1, C)."""
        x = self.src_dropout(self.src_positions(self.src_embedding(src)), training=training)
        for i in range(self.num_blocks):
            x = getattr(self, f"encoder_{i}")(x, src, training=training)
        return x

    def decode(self, tgt_in, enc, src, training=False):
        """Decoder input ids (N, T2), enc (N, T1, C), src ids (N, T1) -> logits (N, T2, V)."""
        y = self.tgt_dropout(self.tgt_positions(self.tgt_embedding(tgt_in)), training=training)
        for block in self.decoder_blocks():
            y = block(y, enc, tgt_in, src, training=training)
        return self.output_projection(y)

    def call(self, inputs, training=False):
        src, tgt_in = inputs
        return self.decode(tgt_in, self.encode(src, training=training), src, training=training)

    def decoder_blocks(self):
        return [getattr(self, f"decoder_{i}") for i in range(self.num_blocks)]

    def decode_step(self, tokens, caches, enc_kvs, src):
        """Logits of the word after tokens (N, t), computing the newest position only.

        caches: per decoder block, (keys, values) of the earlier t - 1 positions;
        enc_kvs: per block, cross-attention (keys, values) of the encoder output.
        -> logits (N, V) and the caches grown by one position.
        """
        position = tf.shape(tokens)[1] - 1
        y = self.tgt_positions(self.tgt_embedding(tokens[:, -1:]), start=position)  # (N, 1, C)
        grown = []
        for block, cache, enc_kv in zip(self.decoder_blocks(), caches, enc_kvs):
            y, cache = block.step(y, tokens, cache, enc_kv, src)
            grown.append(cache)
        return self.output_projection(y)[:, 0], grown  # (N, V)


def build_model(hp, src_vocab_size, tgt_vocab_size):
    """A Transformer of the settings' shape, with its variables created (so it can be restored).

    Sets the global Keras dtype policy from hp.mixed_precision first, so that
    every layer computes in it.
    """
    keras.mixed_precision.set_global_policy(PRECISIONS[hp.mixed_precision])
    model = Transformer(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                        hidden_units=hp.hidden_units, num_blocks=hp.num_blocks, num_heads=hp.num_heads,
                        dropout_rate=hp.dropout_rate, sinusoid=hp.sinusoid, maxlen=hp.maxlen)
    ids = tf.fill((1, 1), BOS)
    model((ids, ids))
    return model


def shift_right(tgt):
    """Decoder input: <S> followed by the target without its last position, (N, T2) -> (N, T2)."""
    bos = tf.fill((tf.shape(tgt)[0], 1), tf.constant(BOS, tgt.dtype))
    return tf.concat([bos, tgt[:, :-1]], axis=1)


def _greedy_loop(src, limits, first_state, next_logits):
    """The loop both greedy decoders share: (N, T1) src, (N,) limits -> ids (N, max(limits)).

    first_state: (the decoder's state before the first step, its tf.while_loop shape
    invariants); next_logits(out, i, state) -> (logits (N, V) of position i + 1 of
    out, new state). A sentence is finished once it emits </S> or reaches its limit (the longest
    translation allowed, incl. </S>); it gets <PAD> from then on. The tf.while_loop
    stops when every sentence is finished.
    """
    batch, max_len = tf.shape(src)[0], tf.reduce_max(limits)
    out = tf.concat([tf.fill((batch, 1), BOS), tf.fill((batch, max_len), PAD)], axis=1)  # (N, 1 + max_len)
    columns = tf.range(max_len + 1)[None, :]  # (1, 1 + max_len)

    def step(i, out, finished, state):
        logits, state = next_logits(out, i, state)
        word = tf.where(finished, PAD, tf.argmax(logits, axis=-1, output_type=tf.int32))  # (N,)
        out = tf.where(columns == i + 1, word[:, None], out)  # write column i + 1
        return i + 1, out, finished | (word == EOS) | (i + 1 >= limits), state

    def not_done(i, out, finished, state):
        return ~tf.reduce_all(finished)

    state, invariants = first_state
    _, out, _, _ = tf.while_loop(not_done, step, (0, out, limits <= 0, state),
                                 shape_invariants=(tf.TensorShape(()), out.shape, limits.shape, invariants))
    return out[:, 1:]


def decode_limits(src, *, extra, cap):
    """The longest translation allowed for each source sentence, incl. </S>: its length + extra, at most cap.

    src ids (N, T1) -> (N,) int32.
    """
    lengths = tf.reduce_sum(tf.cast(src != PAD, tf.int32), axis=1)  # (N,), incl. </S>
    return tf.minimum(lengths + extra, cap)


DECODER_SIGNATURE = [tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int32)]


def greedy_decoder(model):
    """A compiled greedy decoder that reruns the decoder on the whole prefix at every step.

    (src (N, T1) int32, limits (N,) int32) -> ids (N, max(limits)). Quadratic in
    the length, but plain: the reference for cached_greedy_decoder().
    """

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        enc = model.encode(src)  # (N, T1, C)

        def next_logits(out, i, state):
            return model.decode(out[:, :i + 1], enc, src)[:, -1], state  # (N, V)

        return _greedy_loop(src, limits, (tf.zeros(()), tf.TensorShape(())), next_logits)

    return decode


def cached_greedy_decoder(model):
    """A compiled greedy decoder that computes only the newest position at each step.

    Same signature and output as greedy_decoder(); each step's work no longer
    grows with the prefix, except the attention over the cached keys.
    """

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        enc = model.encode(src)  # (N, T1, C)
        blocks = model.decoder_blocks()
        enc_kvs = [block.cross_attention.keys_values(enc) for block in blocks]  # once per sentence
        heads = blocks[0].self_attention.num_heads
        empty = tf.zeros((tf.shape(src)[0], heads, 0, enc.shape[-1] // heads), enc.dtype)  # (N, h, 0, C/h)
        caches = [(empty, empty) for _ in blocks]
        growing = tf.TensorShape((None, heads, None, enc.shape[-1] // heads))
        invariants = [(growing, growing) for _ in blocks]

        def next_logits(out, i, caches):
            return model.decode_step(out[:, :i + 1], caches, enc_kvs, src)

        return _greedy_loop(src, limits, (caches, invariants), next_logits)

    return decode

"""The encoder-decoder Transformer and its greedy decoder.

    src (N, T1) ids -> encoder -> enc (N, T1, C)
    <S> + tgt shifted right (N, T2) -> decoder (attends to enc) -> logits (N, T2, V)
"""
import keras
import tensorflow as tf

from data_load import BOS, EOS, PAD
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
        self.output_projection = keras.layers.Dense(tgt_vocab_size, name="output_projection")

    def encode(self, src, training=False):
        """src ids (N, T1) -> (N, T1, C)."""
        x = self.src_dropout(self.src_positions(self.src_embedding(src)), training=training)
        for i in range(self.num_blocks):
            x = getattr(self, f"encoder_{i}")(x, src, training=training)
        return x

    def decode(self, tgt_in, enc, src, training=False):
        """Decoder input ids (N, T2), enc (N, T1, C), src ids (N, T1) -> logits (N, T2, V)."""
        y = self.tgt_dropout(self.tgt_positions(self.tgt_embedding(tgt_in)), training=training)
        for i in range(self.num_blocks):
            y = getattr(self, f"decoder_{i}")(y, enc, tgt_in, src, training=training)
        return self.output_projection(y)

    def call(self, inputs, training=False):
        src, tgt_in = inputs
        return self.decode(tgt_in, self.encode(src, training=training), src, training=training)


def build_model(hp, src_vocab_size, tgt_vocab_size):
    """A Transformer of the settings' shape, with its variables created (so it can be restored)."""
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


def greedy_decoder(model):
    """Returns a compiled greedy decoder: (src (N, T1) int32, max_len int32) -> ids (N, max_len).

    Each step runs the decoder on the prefix decoded so far and appends the most
    likely next word. The loop is a tf.while_loop that stops as soon as every
    sentence has emitted </S>; later positions of finished sentences are <PAD>.
    """

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((), tf.int32)])
    def decode(src, max_len):
        enc = model.encode(src)  # (N, T1, C)
        batch = tf.shape(src)[0]
        out = tf.concat([tf.fill((batch, 1), BOS), tf.fill((batch, max_len), PAD)], axis=1)  # (N, 1 + max_len)
        columns = tf.range(max_len + 1)[None, :]  # (1, 1 + max_len)

        def step(i, out, finished):
            logits = model.decode(out[:, :i + 1], enc, src)  # (N, i + 1, V)
            word = tf.argmax(logits[:, -1], axis=-1, output_type=tf.int32)  # (N,)
            word = tf.where(finished, PAD, word)
            out = tf.where(columns == i + 1, word[:, None], out)  # write column i + 1
            return i + 1, out, finished | (word == EOS)

        def not_done(i, out, finished):
            return (i < max_len) & ~tf.reduce_all(finished)

        _, out, _ = tf.while_loop(not_done, step, (0, out, tf.zeros((batch,), tf.bool)))
        return out[:, 1:]

    return decode

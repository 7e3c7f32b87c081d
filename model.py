"""The encoder-decoder Transformer (the decoders that use it are in decoding.py).

    src (N, T1) ids -> encoder -> enc (N, T1, C)
    <S> + tgt shifted right (N, T2) -> decoder (attends to enc) -> logits (N, T2, V)

decode_step() computes the next word's logits from the newest position only,
with each decoder layer's keys and values of the earlier positions cached.
"""
import keras
import tensorflow as tf

from hyperparams import PRECISIONS
from modules import (Embedding, FeedForward, MultiHeadAttention, PositionalEncoding,
                     causal_mask, padding_mask, query_mask)
from vocab import BOS

FF_MULTIPLIER = 4  # inner feed-forward width = 4C, as the original and the paper


class TiedOutput(keras.layers.Layer):
    """Logits from the embedding table itself, plus a bias per word: (N, T, C), (V, C) -> (N, T, V).

    A float32 layer, so that inside it Keras reads the table in float32 even
    under a 16-bit policy (read by the caller, it would arrive rounded).
    """

    def __init__(self, *, vocab_size, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="bias")  # (V,)

    def call(self, y, table):
        return tf.matmul(tf.cast(y, tf.float32), table, transpose_b=True) + self.bias


class EncoderBlock(keras.layers.Layer):
    """Self-attention over the source, then feed-forward."""

    def __init__(self, *, units, num_heads, dropout_rate, residual_dropout, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = MultiHeadAttention(units=units, num_heads=num_heads, dropout_rate=dropout_rate,
                                                 residual_dropout=residual_dropout, name="self_attention")
        self.feed_forward = FeedForward(units=units, inner_units=FF_MULTIPLIER * units,
                                        residual_dropout=residual_dropout, name="feed_forward")

    def call(self, x, src, training=False, return_weights=False):
        """x (N, T1, C), src ids (N, T1) -> (N, T1, C); with return_weights also the weights (N, h, T1, T1)."""
        x, weights = self.self_attention(x, x, attention_mask=padding_mask(src), query_mask=query_mask(src),
                                         training=training, return_weights=True)
        x = self.feed_forward(x, training=training)
        return (x, weights) if return_weights else x


class DecoderBlock(keras.layers.Layer):
    """Causal self-attention, attention over the encoder output, then feed-forward."""

    def __init__(self, *, units, num_heads, dropout_rate, residual_dropout, **kwargs):
        super().__init__(**kwargs)
        attention = dict(units=units, num_heads=num_heads, dropout_rate=dropout_rate,
                         residual_dropout=residual_dropout)
        self.self_attention = MultiHeadAttention(**attention, name="self_attention")
        self.cross_attention = MultiHeadAttention(**attention, name="cross_attention")
        self.feed_forward = FeedForward(units=units, inner_units=FF_MULTIPLIER * units,
                                        residual_dropout=residual_dropout, name="feed_forward")

    def call(self, y, enc, tgt_in, src, training=False, return_weights=False):
        """y (N, T2, C), enc (N, T1, C), ids tgt_in (N, T2) and src (N, T1) -> (N, T2, C); with
        return_weights also the self- and cross-attention weights (N, h, T2, T2) and (N, h, T2, T1)."""
        self_mask = padding_mask(tgt_in) & causal_mask(tf.shape(tgt_in)[1])  # (N, 1, T2, T2)
        y, self_weights = self.self_attention(y, y, attention_mask=self_mask, query_mask=query_mask(tgt_in),
                                              training=training, return_weights=True)
        y, cross_weights = self.cross_attention(y, enc, attention_mask=padding_mask(src),
                                                query_mask=query_mask(tgt_in), training=training, return_weights=True)
        y = self.feed_forward(y, training=training)
        return (y, (self_weights, cross_weights)) if return_weights else y

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
                 dropout_rate, residual_dropout=0.0, sinusoid, maxlen, share_embeddings=False, **kwargs):
        super().__init__(**kwargs)
        blocks = dict(units=hidden_units, num_heads=num_heads, dropout_rate=dropout_rate,
                      residual_dropout=residual_dropout)
        positions = dict(units=hidden_units, max_len=maxlen, learned=not sinusoid)
        self.src_embedding = Embedding(vocab_size=src_vocab_size, units=hidden_units, name="src_embedding")
        self.src_positions = PositionalEncoding(**positions, name="src_positions")
        self.src_dropout = keras.layers.Dropout(dropout_rate)
        # Blocks are attributes, not a list: Keras 3 keeps lists in a wrapper that
        # tf.train.Checkpoint does not see, so their weights would not be saved.
        self.num_blocks = num_blocks
        for i in range(num_blocks):
            setattr(self, f"encoder_{i}", EncoderBlock(**blocks, name=f"encoder_{i}"))
        self.tgt_embedding = (self.src_embedding if share_embeddings else
                              Embedding(vocab_size=tgt_vocab_size, units=hidden_units, name="tgt_embedding"))
        self.tgt_positions = PositionalEncoding(**positions, name="tgt_positions")
        self.tgt_dropout = keras.layers.Dropout(dropout_rate)
        for i in range(num_blocks):
            setattr(self, f"decoder_{i}", DecoderBlock(**blocks, name=f"decoder_{i}"))
        # float32 logits whatever the policy: the softmax over V is where 16 bits would hurt.
        # Shared embeddings: the output layer is the embedding table transposed, plus a bias
        # (paper 3.4), which the small corpora here need more than the extra parameters.
        self.share_embeddings = share_embeddings
        self.output_projection = (TiedOutput(vocab_size=tgt_vocab_size, name="tied_output") if share_embeddings
                                  else keras.layers.Dense(tgt_vocab_size, dtype="float32", name="output_projection"))

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
        return self.logits(y)

    def logits(self, y):
        """Decoder output (N, T, C) -> float32 logits (N, T, V)."""
        if self.share_embeddings:
            return self.output_projection(y, self.tgt_embedding.table)
        return self.output_projection(y)

    def call(self, inputs, training=False):
        src, tgt_in = inputs
        return self.decode(tgt_in, self.encode(src, training=training), src, training=training)

    def attention_maps(self, src, tgt_in):
        """Every layer's attention weights for src ids (N, T1) and decoder input ids (N, T2):
        {"encoder self-attention": [(N, h, T1, T1)] per block, "decoder self-attention": [(N, h, T2, T2)],
        "cross-attention": [(N, h, T2, T1)]}, as call() computes them."""
        maps = {"encoder self-attention": [], "decoder self-attention": [], "cross-attention": []}
        x = self.src_positions(self.src_embedding(src))
        for i in range(self.num_blocks):
            x, weights = getattr(self, f"encoder_{i}")(x, src, return_weights=True)
            maps["encoder self-attention"].append(weights)
        y = self.tgt_positions(self.tgt_embedding(tgt_in))
        for block in self.decoder_blocks():
            y, (self_weights, cross_weights) = block(y, x, tgt_in, src, return_weights=True)
            maps["decoder self-attention"].append(self_weights)
            maps["cross-attention"].append(cross_weights)
        return maps

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
        return self.logits(y)[:, 0], grown  # (N, V)


def build_model(hp, src_vocab_size, tgt_vocab_size):
    """A Transformer of the settings' shape, with its variables created (so it can be restored).

    Sets the global Keras dtype policy from hp.mixed_precision first, so that
    every layer computes in it.
    """
    keras.mixed_precision.set_global_policy(PRECISIONS[hp.mixed_precision])
    model = Transformer(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                        hidden_units=hp.hidden_units, num_blocks=hp.num_blocks, num_heads=hp.num_heads,
                        dropout_rate=hp.dropout_rate, residual_dropout=hp.residual_dropout, sinusoid=hp.sinusoid,
                        maxlen=hp.maxlen, share_embeddings=hp.share_embeddings)
    ids = tf.fill((1, 1), BOS)
    model((ids, ids))
    return model


def shift_right(tgt):
    """Decoder input: <S> followed by the target without its last position, (N, T2) -> (N, T2)."""
    bos = tf.fill((tf.shape(tgt)[0], 1), tf.constant(BOS, tgt.dtype))
    return tf.concat([bos, tgt[:, :-1]], axis=1)

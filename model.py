"""The encoder-decoder Transformer (the decoders that use it are in decoding.py).

    src (N, T1) ids -> encoder -> enc (N, T1, C)
    <S> + tgt shifted right (N, T2) -> decoder (attends to enc) -> logits (N, T2, V)

One pass through each stack serves training, attention maps and decoding:
run_decoder() computes every position at once, or, given each block's cache
of the earlier positions' keys and values, one position only (decode_step()).
A decoding cache has a fixed length, the longest translation of its batch
(rounded up), masked beyond the positions decoded so far: every step of a
batch meets the same tensor shapes, so a step's kernels are made once per
batch shape, not once per position.
"""
import keras
import tensorflow as tf

from hyperparams import PRECISIONS
from modules import (LAYER_NORM_EPSILON, Dropout, Embedding, FeedForward, MultiHeadAttention, PositionalEncoding,
                     TiedOutput, WordDropout, causal_mask, fold_seed, padding_mask, query_mask)
from vocab import BOS

FF_MULTIPLIER = 4  # inner feed-forward width = 4C, as the original and the paper


class EncoderBlock(keras.layers.Layer):
    """Self-attention over the source, then feed-forward (paper 3.1)."""

    def __init__(self, *, units, num_heads, dropout_rate, residual_dropout, ff_dropout, pre_norm, **kwargs):
        super().__init__(**kwargs)
        self.self_attention = MultiHeadAttention(units=units, num_heads=num_heads, dropout_rate=dropout_rate,
                                                 residual_dropout=residual_dropout, pre_norm=pre_norm,
                                                 name="self_attention")
        self.feed_forward = FeedForward(units=units, inner_units=FF_MULTIPLIER * units, pre_norm=pre_norm,
                                        residual_dropout=residual_dropout, ff_dropout=ff_dropout, name="feed_forward")

    def build(self, hidden_shape):
        self.self_attention.build(hidden_shape)
        self.feed_forward.build(hidden_shape)

    def call(self, hidden, src, training=False, seed=None):
        """Hidden states (N, T1, C), src ids (N, T1) -> (N, T1, C) and the attention weights (N, h, T1, T1).
        seed: None, or the (2,) int32 seed the block's dropout masks come from."""
        hidden, weights = self.self_attention(hidden, attention_mask=padding_mask(src), query_mask=query_mask(src),
                                              training=training, return_weights=True, seed=fold_seed(seed, 0))
        return self.feed_forward(hidden, training=training, seed=fold_seed(seed, 1)), weights


class DecoderBlock(keras.layers.Layer):
    """Causal self-attention, attention over the encoder output, then feed-forward (paper 3.1).

    One call() serves training and decoding. Without a cache it computes every
    position of the target at once, each seeing the positions up to itself.
    With a cache it computes one position only: the cache holds the
    self-attention keys and values of the earlier positions, and comes back
    with this position's written in.
    """

    def __init__(self, *, units, num_heads, dropout_rate, residual_dropout, ff_dropout, pre_norm, **kwargs):
        super().__init__(**kwargs)
        attention = dict(units=units, num_heads=num_heads, dropout_rate=dropout_rate,
                         residual_dropout=residual_dropout, pre_norm=pre_norm)
        self.self_attention = MultiHeadAttention(**attention, name="self_attention")
        self.cross_attention = MultiHeadAttention(**attention, name="cross_attention")
        self.feed_forward = FeedForward(units=units, inner_units=FF_MULTIPLIER * units, pre_norm=pre_norm,
                                        residual_dropout=residual_dropout, ff_dropout=ff_dropout, name="feed_forward")

    def build(self, hidden_shape):
        for layer in (self.self_attention, self.cross_attention, self.feed_forward):
            layer.build(hidden_shape)

    def call(self, hidden, tgt_in, src, *, enc=None, enc_kv=None, cache=None, position=None, training=False,
             seed=None):
        """Hidden states (N, T, C) of the positions computed: all T2 of tgt_in ids (N, T2), or with a cache
        the one at `position` (T = 1); src ids (N, T1); the encoder output enc (N, T1, C), or its
        cross-attention keys and values enc_kv (each (N, h, T1, C/h)); cache: self-attention (keys,
        values) of every position of tgt_in, each (N, h, T2, C/h), of which those before `position` are
        filled in. seed: None, or the (2,) int32 seed the block's dropout masks come from.
        -> hidden (N, T, C), the self- and cross-attention weights (N, h, T, T2) and (N, h, T, T1), and the
        cache with `position` filled in (None without one).
        """
        if cache is None:
            queries, mask = tgt_in, padding_mask(tgt_in) & causal_mask(tf.shape(tgt_in)[1])  # (N, 1, T2, T2)
        else:  # the causal mask's row `position`: it sees every position up to itself
            k, v = self.self_attention.keys_values(self.self_attention.inputs(hidden))  # (N, h, 1, C/h)
            keys = tf.range(tf.shape(tgt_in)[1])  # (T2,)
            at = (keys == position)[None, None, :, None]  # (1, 1, T2, 1)
            cache = (tf.where(at, k, cache[0]), tf.where(at, v, cache[1]))  # (N, h, T2, C/h)
            queries = tgt_in[:, position:position + 1]  # (N, 1)
            mask = padding_mask(tgt_in) & (keys <= position)[None, None, None, :]  # (N, 1, 1, T2)
        hidden, self_weights = self.self_attention(hidden, keys_values=cache, attention_mask=mask,
                                                   query_mask=query_mask(queries), training=training,
                                                   return_weights=True, seed=fold_seed(seed, 0))
        hidden, cross_weights = self.cross_attention(hidden, enc, keys_values=enc_kv,
                                                     attention_mask=padding_mask(src), query_mask=query_mask(queries),
                                                     training=training, return_weights=True, seed=fold_seed(seed, 1))
        hidden = self.feed_forward(hidden, training=training, seed=fold_seed(seed, 2))
        return hidden, (self_weights, cross_weights), cache


def recomputed(block, hidden, *, enc=None, **kwargs):
    """A block's output hidden states in training, block(hidden, training=True, **kwargs)[0], whose
    activations are not kept for the backward pass but computed again there from its inputs.

    So the backward pass holds one block's activations at a time instead of every
    block's, for one more forward pass through the blocks. The gradient flows
    back through hidden and enc (a decoder block's encoder output); kwargs must
    hold the seed its dropout masks come from, so that both passes drop the same
    units.
    """
    if enc is None:
        return tf.recompute_grad(lambda h: block(h, training=True, **kwargs)[0])(hidden)
    return tf.recompute_grad(lambda h, e: block(h, enc=e, training=True, **kwargs)[0])(hidden, enc)


class Transformer(keras.Model):
    """Encoder-decoder Transformer; call((src, tgt_in)) -> logits (N, T2, V).

    recompute: in training, each block's activations are computed again in the
    backward pass instead of kept (see recomputed()): less memory, for one more
    forward pass through the blocks (a third more of their work). The blocks'
    dropout masks then come from one seed per stack and step (see _step_seed),
    where Keras's dropout layers would each draw their own.
    """

    def __init__(self, *, src_vocab_size, tgt_vocab_size, hidden_units, num_blocks, num_heads,
                 dropout_rate, residual_dropout=0.0, ff_dropout=0.0, norm_position="post", sinusoid, maxlen,
                 share_embeddings=False, recompute=False, word_dropout=0.0, seed=0, **kwargs):
        super().__init__(**kwargs)
        pre_norm = norm_position == "pre"
        blocks = dict(units=hidden_units, num_heads=num_heads, dropout_rate=dropout_rate,
                      residual_dropout=residual_dropout, ff_dropout=ff_dropout, pre_norm=pre_norm)
        positions = dict(units=hidden_units, maxlen=maxlen, learned=not sinusoid)
        self.hidden_units = hidden_units
        self.src_embedding = Embedding(vocab_size=src_vocab_size, units=hidden_units, name="src_embedding")
        self.src_positions = PositionalEncoding(**positions, name="src_positions")
        self.src_dropout = Dropout(dropout_rate)
        # Blocks are attributes, not a list: tf.train.Checkpoint does not see the layers in a
        # Keras 3 list (checked with Keras 3.15: none of their weights would be saved).
        self.num_blocks = num_blocks
        for i in range(num_blocks):
            setattr(self, f"encoder_{i}", EncoderBlock(**blocks, name=f"encoder_{i}"))
        # pre-norm: each stack ends in a layer norm (post-norm blocks end in one already)
        self.encoder_norm = (keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")
                             if pre_norm else None)
        self.tgt_embedding = (self.src_embedding if share_embeddings else
                              Embedding(vocab_size=tgt_vocab_size, units=hidden_units, name="tgt_embedding"))
        self.tgt_positions = PositionalEncoding(**positions, name="tgt_positions")
        self.tgt_dropout = Dropout(dropout_rate)
        for i in range(num_blocks):
            setattr(self, f"decoder_{i}", DecoderBlock(**blocks, name=f"decoder_{i}"))
        self.decoder_norm = (keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="decoder_norm")
                             if pre_norm else None)
        # float32 logits whatever the policy: the softmax over V is where 16 bits would hurt.
        # Shared embeddings: the output layer is the embedding table transposed, plus a bias
        # (paper 3.4), which the small corpora here need more than the extra parameters.
        self.share_embeddings = share_embeddings
        self.output_projection = (TiedOutput(vocab_size=tgt_vocab_size, name="tied_output") if share_embeddings
                                  else keras.layers.Dense(tgt_vocab_size, dtype="float32", name="output_projection"))
        self.recompute = recompute
        # made last, and only when on: no other layer's random state or initial weights change
        self.word_dropout = WordDropout(word_dropout, seed, name="word_dropout") if word_dropout else None

    def build(self, inputs_shape):
        """Makes every weight from the settings alone: without it, Keras would find them by tracing call()
        in a graph first (seconds, at any size). The values are those a first call would make: each
        initializer drew its seed when its layer was made. (The embeddings and positions made theirs
        then.)"""
        width = (None, None, self.hidden_units)
        for layer in [*self.encoder_blocks(), self.encoder_norm, *self.decoder_blocks(), self.decoder_norm]:
            if layer is not None:
                layer.build(width)
        if not self.share_embeddings:
            self.output_projection.build(width)

    def _step_seed(self, training, blocks):
        """Under recompute in training, a new (2,) int32 seed for one stack of blocks; else None.

        It is drawn from the seed generator of the first block's first dropout
        layer, which recompute leaves otherwise unused (each dropout's mask then
        comes from this seed): no random state beyond the dropout layers', so the
        checkpoints of runs with and without recompute hold the same variables,
        and a run resumes with or without it.
        """
        if not (training and self.recompute):
            return None
        block = blocks[0]
        dropouts = [getattr(sublayer, name, None)
                    for sublayer in (block.self_attention, getattr(block, "cross_attention", None), block.feed_forward)
                    for name in ("dropout", "ff_dropout", "residual_dropout")]
        generator = next((d.seed_generator for d in dropouts if getattr(d, "seed_generator", None) is not None), None)
        if generator is None:  # the blocks drop nothing
            return tf.zeros((2,), tf.int32)
        return keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=generator)

    def encoder_blocks(self):
        return [getattr(self, f"encoder_{i}") for i in range(self.num_blocks)]

    def decoder_blocks(self):
        return [getattr(self, f"decoder_{i}") for i in range(self.num_blocks)]

    def run_encoder(self, src, training=False):
        """src ids (N, T1) -> enc (N, T1, C) and each block's attention weights (N, h, T1, T1)."""
        hidden = self.src_dropout(self.src_positions(self.src_embedding(src)), training=training)  # (N, T1, C)
        weights, seed = [], self._step_seed(training, self.encoder_blocks())
        for i, block in enumerate(self.encoder_blocks()):
            if seed is None:
                hidden, block_weights = block(hidden, src, training=training)
            else:  # recompute (training): no attention weights
                hidden, block_weights = recomputed(block, hidden, src=src, seed=fold_seed(seed, i)), None
            weights.append(block_weights)
        return (hidden if self.encoder_norm is None else self.encoder_norm(hidden)), weights

    def run_decoder(self, tgt_in, src, *, enc=None, enc_kvs=None, caches=None, position=None, training=False):
        """The decoder on ids tgt_in (N, T2), every position at once, or with caches the one at `position`.

        enc: the encoder output (N, T1, C), or enc_kvs: per block, its cross-attention (keys, values);
        caches: per block, self-attention (keys, values) (N, h, T2, C/h), filled in before `position`.
        -> logits (N, T2 or 1, V), per block (self, cross) attention weights, the caches with `position`
        filled in (or None).
        """
        start = 0 if caches is None else position
        if self.word_dropout is not None and caches is None:
            tgt_in = self.word_dropout(tgt_in, training=training)
        ids = tgt_in if caches is None else tgt_in[:, position:position + 1]  # the positions computed
        hidden = self.tgt_positions(self.tgt_embedding(ids), start=start)  # (N, T, C)
        hidden = self.tgt_dropout(hidden, training=training)
        weights, filled = [], []
        seed = self._step_seed(training, self.decoder_blocks())
        for i, block in enumerate(self.decoder_blocks()):
            if seed is None:
                hidden, block_weights, cache = block(hidden, tgt_in, src, enc=enc,
                                                     enc_kv=None if enc_kvs is None else enc_kvs[i],
                                                     cache=None if caches is None else caches[i], position=position,
                                                     training=training)
            else:  # recompute (training, every position at once): no attention weights, no cache
                hidden, block_weights, cache = recomputed(block, hidden, enc=enc, tgt_in=tgt_in, src=src,
                                                          seed=fold_seed(seed, i)), None, None
            weights.append(block_weights)
            filled.append(cache)
        return self.logits(hidden), weights, None if caches is None else filled

    def encoder_keys_values(self, enc):
        """enc (N, T1, C) -> per decoder block, its cross-attention (keys, values), each (N, h, T1, C/h)."""
        return [block.cross_attention.keys_values(enc) for block in self.decoder_blocks()]

    def encode(self, src, training=False):
        """src ids (N, T1) -> (N, T1, C)."""
        return self.run_encoder(src, training=training)[0]

    def decode(self, tgt_in, enc, src, training=False):
        """Decoder input ids (N, T2), enc (N, T1, C), src ids (N, T1) -> logits (N, T2, V)."""
        return self.run_decoder(tgt_in, src, enc=enc, training=training)[0]

    def logits(self, hidden):
        """Decoder output (N, T, C) -> float32 logits (N, T, V)."""
        if self.decoder_norm is not None:
            hidden = self.decoder_norm(hidden)
        if self.share_embeddings:
            return self.output_projection(hidden, self.tgt_embedding.table)
        return self.output_projection(hidden)

    def call(self, inputs, training=False):
        src, tgt_in = inputs
        return self.decode(tgt_in, self.encode(src, training=training), src, training=training)

    def teacher_forced(self, src, tgt, training=False):
        """src (N, T1), tgt (N, T2) ids -> logits (N, T2, V) of each target word given the reference words before
        it: the decoder's input is <S> and tgt shifted right (training, dev loss, scoring)."""
        return self((src, shift_right(tgt)), training=training)

    def attention_maps(self, src, tgt_in):
        """Every layer's attention weights for src ids (N, T1) and decoder input ids (N, T2):
        {"encoder self-attention": [(N, h, T1, T1)] per block, "decoder self-attention": [(N, h, T2, T2)],
        "cross-attention": [(N, h, T2, T1)]}, from the same passes call() makes."""
        enc, encoder_weights = self.run_encoder(src)
        _, decoder_weights, _ = self.run_decoder(tgt_in, src, enc=enc)
        return {"encoder self-attention": encoder_weights,
                "decoder self-attention": [w for w, _ in decoder_weights],
                "cross-attention": [w for _, w in decoder_weights]}

    def start_decoding(self, src, width, repeat=1):
        """What decode_step() needs before the first step, for src ids (N, T1), each sentence repeated `repeat`
        times (beam search): the encoder output's cross-attention keys and values (encoder_keys_values()),
        computed once, and empty caches of `width` positions (empty_caches())."""
        enc = tf.repeat(self.encode(src), repeat, axis=0)  # (N·repeat, T1, C)
        return self.encoder_keys_values(enc), self.empty_caches(tf.shape(enc)[0], width, enc.dtype)

    def decode_step(self, tokens, position, caches, enc_kvs, src):
        """Logits of the word after tokens[:, :position + 1], computing position `position` only.

        tokens (N, L) ids, of which those after `position` are not looked at; position: int32 scalar;
        caches: per decoder block, (keys, values) each (N, h, L, C/h), filled in before `position`
        (see empty_caches()); enc_kvs: from encoder_keys_values().
        -> logits (N, V) and the caches with `position` filled in. Every step of a decoding loop
        thus works on tensors of one shape.
        """
        logits, _, filled = self.run_decoder(tokens, src, enc_kvs=enc_kvs, caches=caches, position=position)
        return logits[:, 0], filled  # (N, V)

    def empty_caches(self, batch, length, dtype):
        """decode_step()'s caches before the first step: per decoder block, (keys, values) of zeros, each
        (batch, h, length, C/h)."""
        attention = self.decoder_blocks()[0].self_attention
        empty = tf.zeros((batch, attention.num_heads, length, attention.depth), dtype)
        return [(empty, empty) for _ in self.decoder_blocks()]


def build_model(hp, src_vocab_size, tgt_vocab_size):
    """A Transformer of the settings' shape, with its variables created (so it can be restored).

    Its layers compute in hp.mixed_precision's dtype policy. A Keras layer takes
    its policy from the global one when it is made, so the global policy is
    set while the model is made and restored afterwards: building a model
    changes nothing for the code around it.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[hp.mixed_precision])
    try:
        model = Transformer(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                            hidden_units=hp.hidden_units, num_blocks=hp.num_blocks, num_heads=hp.num_heads,
                            dropout_rate=hp.dropout_rate, residual_dropout=hp.residual_dropout,
                            ff_dropout=hp.ff_dropout, norm_position=hp.norm_position, sinusoid=hp.sinusoid,
                            maxlen=hp.maxlen, share_embeddings=hp.share_embeddings, recompute=hp.recompute,
                            word_dropout=hp.word_dropout, seed=hp.seed)
        ids = tf.fill((1, 1), BOS)
        model((ids, ids))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def shift_right(tgt):
    """Decoder input: <S> followed by the target without its last position, (N, T2) -> (N, T2)."""
    bos = tf.fill((tf.shape(tgt)[0], 1), tf.constant(BOS, tgt.dtype))
    return tf.concat([bos, tgt[:, :-1]], axis=1)  # (N, T2)

"""Decoding: a trained Transformer's translations, one word per step, inside one tf.function.

    greedy_decoder         reruns the decoder on the whole prefix each step (the plain reference)
    cached_greedy_decoder  computes the newest position only, with cached keys and values
    beam_search_decoder    keeps the beam_size best hypotheses per sentence, on the cached decoder

All three take (src ids (N, T1) int32, limits (N,) int32), where limits come
from decode_limits(), and stop once every sentence has emitted </S> or reached
its limit. translate() runs one of them over batches and returns text.
"""
import math

import tensorflow as tf
from tqdm import tqdm

import data_load
from vocab import BOS, EOS, PAD


DECODER_SIGNATURE = [tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int32)]


def decode_limits(src, hp):
    """The longest translation allowed for each source sentence, incl. </S>: its length + hp.decode_extra,
    at most hp.decode_cap. src ids (N, T1) -> (N,) int32."""
    lengths = tf.reduce_sum(tf.cast(src != PAD, tf.int32), axis=1)  # (N,), incl. </S>
    return tf.minimum(lengths + hp.decode_extra, hp.decode_cap)


def only_words(logits):
    """logits (N, V) with those of <PAD> and <S>, which are not words, set to -inf."""
    not_words = tf.reduce_any(tf.range(tf.shape(logits)[-1])[:, None] == [PAD, BOS], axis=-1)  # (V,)
    return tf.where(not_words, tf.constant(-math.inf, logits.dtype), logits)


def _greedy_loop(src, limits, first_state, next_logits):
    """The loop both greedy decoders share: (N, T1) src, (N,) limits -> ids (N, max(limits)).

    first_state: (the decoder's state before the first step, its tf.while_loop shape
    invariants); next_logits(out, i, state) -> (logits (N, V) of position i + 1 of
    out, new state). A sentence is finished once it emits </S> or reaches its limit (the longest
    translation allowed, incl. </S>); it gets <PAD> from then on. The tf.while_loop
    stops when every sentence is finished. <PAD> and <S> are never chosen as words.
    """
    batch, max_len = tf.shape(src)[0], tf.reduce_max(limits)
    out = tf.concat([tf.fill((batch, 1), BOS), tf.fill((batch, max_len), PAD)], axis=1)  # (N, 1 + max_len)
    columns = tf.range(max_len + 1)[None, :]  # (1, 1 + max_len)

    def step(i, out, finished, state):
        logits, state = next_logits(out, i, state)
        word = tf.where(finished, PAD, tf.argmax(only_words(logits), axis=-1, output_type=tf.int32))  # (N,)
        out = tf.where(columns == i + 1, word[:, None], out)  # write column i + 1
        return i + 1, out, finished | (word == EOS) | (i + 1 >= limits), state

    def not_done(i, out, finished, state):
        return ~tf.reduce_all(finished)

    state, invariants = first_state
    _, out, _, _ = tf.while_loop(not_done, step, (0, out, limits <= 0, state),
                                 shape_invariants=(tf.TensorShape(()), out.shape, limits.shape, invariants))
    return out[:, 1:]  # (N, max_len), without the <S> column


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


def _empty_caches(model, enc):
    """Decoder state before the first cached step, for encoder output enc (N, T1, C).

    -> (per block: cross-attention (keys, values), computed once per sentence),
       (per block: empty self-attention (keys, values) (N, h, 0, C/h)), their shape invariants.
    """
    blocks = model.decoder_blocks()
    enc_kvs = model.encoder_keys_values(enc)
    heads = blocks[0].self_attention.num_heads
    empty = tf.zeros((tf.shape(enc)[0], heads, 0, enc.shape[-1] // heads), enc.dtype)  # (N, h, 0, C/h)
    growing = tf.TensorShape((None, heads, None, enc.shape[-1] // heads))
    return enc_kvs, [(empty, empty) for _ in blocks], [(growing, growing) for _ in blocks]


def cached_greedy_decoder(model):
    """A compiled greedy decoder that computes only the newest position at each step.

    Same signature and output as greedy_decoder(); each step's work no longer
    grows with the prefix, except the attention over the cached keys.
    """

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        enc_kvs, caches, invariants = _empty_caches(model, model.encode(src))

        def next_logits(out, i, caches):
            return model.decode_step(out[:, :i + 1], caches, enc_kvs, src)

        return _greedy_loop(src, limits, (caches, invariants), next_logits)

    return decode


def length_penalty(lengths, alpha):
    """GNMT's length penalty ((5 + length) / 6)^alpha (Wu et al., 2016, eq. 14); lengths int (...,) -> float32."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def beam_search_decoder(model, beam_size, alpha):  # long: its steps share one traced function's state
    """A compiled batched beam search on the cached decoder.

    (src (N, T1) int32, limits (N,) int32) -> ids (N, k, max(limits)), best
    hypothesis first, and their scores (N, k): log-probability / length_penalty.
    Hypotheses are ranked by that score at every step; a finished one (it
    emitted </S> or reached its limit) stays in the beam while it ranks among the k
    best, and a sentence is done when all k are finished. With k = 1 this is
    greedy decoding: the same words as cached_greedy_decoder().
    """
    k = beam_size

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        # 1. Every sentence's rows repeated k times: row n * k + b is beam b of sentence n.
        n, max_len = tf.shape(src)[0], tf.reduce_max(limits)
        src_k, limits_k = tf.repeat(src, k, axis=0), tf.repeat(limits, k)  # (N·k, T1), (N·k,)
        enc_kvs, caches, invariants = _empty_caches(model, tf.repeat(model.encode(src), k, axis=0))  # (N·k, T1, C)
        out = tf.concat([tf.fill((n * k, 1), BOS), tf.fill((n * k, max_len), PAD)], axis=1)  # (N·k, 1 + L)
        columns = tf.range(max_len + 1)[None, :]
        # Only beam 0 is alive at first, so the k first hypotheses are k different words.
        scores = tf.tile(tf.concat([[0.0], tf.fill((k - 1,), -math.inf)], 0), [n])  # (N·k,) log-probs
        lengths = tf.zeros((n * k,), tf.int32)  # words so far, incl. </S>

        def step(i, out, scores, lengths, finished, caches):
            # 2. Log-probabilities of every next word; a finished hypothesis can only add <PAD>, at no cost.
            logits, caches = model.decode_step(out[:, :i + 1], caches, enc_kvs, src_k)  # (N·k, V)
            vocab = tf.shape(logits)[1]
            pad_only = tf.where(tf.range(vocab) == PAD, 0.0, -math.inf)  # (V,)
            logp = tf.nn.log_softmax(only_words(tf.cast(logits, tf.float32)))  # (N·k, V)
            logp = tf.where(finished[:, None], pad_only[None], logp)
            grown = lengths + tf.cast(~finished, tf.int32)  # (N·k,)
            candidates = scores[:, None] + logp  # (N·k, V)
            ranked = candidates / length_penalty(grown, alpha)[:, None]
            # 3. The k best of the k·V candidates of each sentence: which beam they extend, which word.
            _, best = tf.math.top_k(tf.reshape(ranked, (n, k * vocab)), k)  # (N, k)
            beam, word = best // vocab, best % vocab
            rows = tf.reshape(tf.range(n)[:, None] * k + beam, (-1,))  # (N·k,) the row each extends
            word = tf.reshape(word, (-1,))  # (N·k,)
            scores = tf.gather(tf.reshape(candidates, (-1,)), rows * vocab + word)  # (N·k,)
            # 4. Reorder every per-hypothesis state to follow its beam, then write the new word.
            caches = [(tf.gather(keys, rows), tf.gather(values, rows))  # (N·k, h, i + 1, C/h)
                      for keys, values in caches]
            finished = tf.gather(finished, rows) | (word == EOS) | (i + 1 >= limits_k)  # (N·k,)
            out = tf.where(columns == i + 1, word[:, None], tf.gather(out, rows))  # (N·k, 1 + L)
            return i + 1, out, scores, tf.gather(grown, rows), finished, caches

        def not_done(i, *state):
            return ~tf.reduce_all(state[3])

        loop = (0, out, scores, lengths, limits_k <= 0, caches)
        shapes = (tf.TensorShape(()), out.shape, scores.shape, lengths.shape, limits_k.shape, invariants)
        _, out, scores, lengths, _, _ = tf.while_loop(not_done, step, loop, shape_invariants=shapes)
        # The last top_k ranked by these same scores, so the beams are already best first.
        final = scores / length_penalty(lengths, alpha)
        return tf.reshape(out[:, 1:], (n, k, -1)), tf.reshape(final, (n, k))  # (N, k, L), (N, k)

    return decode


def translate(decoder, x, vocab, hp, desc="decoding"):
    """Translations of the source ids x (n, T1) as text, in batches of hp.batch_size.

    decoder: from make_decoder(); its best hypothesis is taken.
    """
    hypotheses = []
    batches = data_load.eval_batches(x, hp.batch_size)
    for src in tqdm(batches, total=math.ceil(len(x) / hp.batch_size), desc=desc, unit="batch", leave=False):
        limits = decode_limits(src, hp)
        ids, _ = decoder(src, limits)
        hypotheses += vocab.decode(ids[:, 0].numpy())  # the best hypothesis
    return hypotheses


def make_decoder(model, beam_size, alpha):
    """(src, limits) -> (ids (N, k, L) best first, scores (N, k)) whatever the beam size: beam search,
    or for beam_size 1 the cached greedy decoder's output as one hypothesis of score 0."""
    if beam_size > 1:
        return beam_search_decoder(model, beam_size, alpha)
    greedy = cached_greedy_decoder(model)

    def decode(src, limits):
        ids = greedy(src, limits)  # (N, L)
        return ids[:, None], tf.zeros((tf.shape(ids)[0], 1))

    return decode

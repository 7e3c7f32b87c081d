"""Decoding: a trained Transformer's translations, one word per step, inside one tf.function.

    greedy_decoder         reruns the decoder on the whole prefix each step (the plain reference)
    cached_greedy_decoder  computes the newest position only, with cached keys and values
    beam_search_decoder    keeps the beam_size best hypotheses per sentence, on the cached decoder
    sampling_decoder       the cached greedy loop, drawing each word at random among the K likeliest

All take (src ids (N, T1) int32, limits (N,) int32), where limits come from
decode_limits(), and stop once every sentence has emitted </S> or reached its
limit. translate() runs one of them over batches and returns text.

The cached decoders keep each batch's keys and values in caches as long as
its longest translation rounded up to a multiple of data_load.SHAPE_STEP:
every step of a batch computes on the same shapes, and batches share a few.
(Caches that grew by one position per step gave each step shapes of its own,
and on a CPU TensorFlow's oneDNN kernels keep what they prepare for each
shape: docs/benchmarks.md measures what that held.)

Each takes one model or a list of models (an ensemble) that share a vocab:
an ensemble's next-word scores are the mean of its models' log-probabilities
(fairseq's and OpenNMT's ensembles); one model's are its logits.
"""
import math

import tensorflow as tf
from tqdm import tqdm

import data_load
from vocab import BOS, EOS, PAD


DECODER_SIGNATURE = [data_load.IDS, tf.TensorSpec((None,), tf.int32)]


def decode_limits(src, hp):
    """The longest translation allowed for each source sentence, incl. </S>: its length + hp.decode_extra,
    at most hp.decode_cap. src ids (N, T1) -> (N,) int32."""
    lengths = tf.reduce_sum(tf.cast(src != PAD, tf.int32), axis=1)  # (N,), incl. </S>
    return tf.minimum(lengths + hp.decode_extra, hp.decode_cap)


def only_words(logits):
    """logits (N, V) with those of <PAD> and <S>, which are not words, set to -inf."""
    not_words = tf.reduce_any(tf.range(tf.shape(logits)[-1])[:, None] == [PAD, BOS], axis=-1)  # (V,)
    return tf.where(not_words, tf.constant(-math.inf, logits.dtype), logits)


def as_models(model):
    """A model or an ensemble, as a list of models."""
    return list(model) if isinstance(model, (list, tuple)) else [model]


def combine(logits):
    """One model's logits (N, ..., V) as they are; several models': the mean of their log-probabilities,
    float32."""
    if len(logits) == 1:
        return logits[0]
    return tf.add_n([tf.nn.log_softmax(tf.cast(x, tf.float32)) for x in logits]) / len(logits)


def decoding_width(limits):
    """(N,) limits -> the longest translation of the batch, max(limits), and the width the cached
    decoders work in: that rounded up to a multiple of data_load.SHAPE_STEP."""
    longest = tf.reduce_max(limits)
    return longest, data_load.round_up(longest)


def _empty_output(rows, width):
    """The ids a decoding loop writes into: (rows, 1 + width), <S> then <PAD>s; and the column numbers
    (1, 1 + width) that say where step i writes (column i + 1)."""
    out = tf.concat([tf.fill((rows, 1), BOS), tf.fill((rows, width), PAD)], axis=1)
    return out, tf.range(width + 1)[None, :]


def _greedy_loop(src, limits, next_logits, state=(), pick=None):
    """The loop both greedy decoders share: (N, T1) src, (N,) limits -> ids (N, max(limits)).

    out: <S>, then decoding_width() columns of <PAD>, the words written in as they come.
    state: the decoder's state before the first step; next_logits(out, i, state) -> (logits
    (N, V) of position i + 1 of out, the new state in the same shapes). A sentence is finished
    once it emits </S> or reaches its limit (the longest translation allowed, incl. </S>); it
    gets <PAD> from then on. The tf.while_loop stops when every sentence is finished. <PAD> and
    <S> are never chosen as words. pick(logits (N, V)) -> words (N,) int32 chooses each word;
    default: the likeliest.
    """
    pick = pick or (lambda logits: tf.argmax(logits, axis=-1, output_type=tf.int32))
    longest, width = decoding_width(limits)
    out, columns = _empty_output(tf.shape(src)[0], width)  # (N, 1 + width), (1, 1 + width)

    def step(i, out, finished, state):
        logits, state = next_logits(out, i, state)
        word = tf.where(finished, PAD, pick(only_words(logits)))  # (N,)
        out = tf.where(columns == i + 1, word[:, None], out)  # write column i + 1
        return i + 1, out, finished | (word == EOS) | (i + 1 >= limits), state

    def not_done(i, out, finished, state):
        return ~tf.reduce_all(finished)

    _, out, _, _ = tf.while_loop(not_done, step, (0, out, limits <= 0, state))
    return out[:, 1:longest + 1]  # (N, max(limits)), without the <S> column


def greedy_decoder(model):
    """A compiled greedy decoder that reruns the decoder on the whole prefix at every step.

    (src (N, T1) int32, limits (N,) int32) -> ids (N, max(limits)). Quadratic in
    the length, but plain: the reference for cached_greedy_decoder().
    """

    models = as_models(model)

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        encs = [m.encode(src) for m in models]  # each (N, T1, C)

        def next_logits(out, i, state):
            return combine([m.decode(out[:, :i + 1], enc, src)[:, -1] for m, enc in zip(models, encs)]), state

        return _greedy_loop(src, limits, next_logits)

    return decode


def _ensemble_start(models, src, width, repeat=1):
    """Every model's cross-attention (keys, values) per block, computed once per sentence of src (N, T1),
    and its empty caches of `width` positions, each encoder output repeated `repeat` times per sentence
    (beam search): -> (per model enc_kvs, per model caches)."""
    encs = [tf.repeat(m.encode(src), repeat, axis=0) for m in models]  # each (N·repeat, T1, C)
    return ([m.encoder_keys_values(enc) for m, enc in zip(models, encs)],
            [m.empty_caches(tf.shape(enc)[0], width, enc.dtype) for m, enc in zip(models, encs)])


def _ensemble_step(models, tokens, position, caches, enc_kvs, src):
    """Every model's decode_step() at `position` of tokens (N, L) -> the combined logits (N, V) and each
    model's caches."""
    stepped = [m.decode_step(tokens, position, c, e, src) for m, c, e in zip(models, caches, enc_kvs)]
    return combine([logits for logits, _ in stepped]), [filled for _, filled in stepped]


def cached_greedy_decoder(model, pick=None):
    """A compiled greedy decoder that computes only the newest position at each step.

    Same signature and output as greedy_decoder(); every step does the same work:
    one position through the decoder, attending over all decoding_width() cached
    positions, masked beyond the prefix. pick: see _greedy_loop().
    """
    models = as_models(model)

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        enc_kvs, caches = _ensemble_start(models, src, decoding_width(limits)[1])

        def next_logits(out, i, caches):
            return _ensemble_step(models, out[:, :-1], i, caches, enc_kvs, src)

        return _greedy_loop(src, limits, next_logits, caches, pick)

    return decode


def sampling_decoder(model, topk, temperature, seed):
    """cached_greedy_decoder() drawing each word from the model's distribution restricted to its topk
    likeliest words, logits divided by temperature (Edunov et al., 2018, for back-translation).

    Seeded: the same seed, sentences and batches give the same translations.
    (A stateful generator: each batch continues its random stream.)
    """
    generator = tf.random.Generator.from_seed(seed)

    def pick(logits):  # (N, V) with -inf for non-words -> (N,)
        logits = tf.cast(logits, tf.float32)
        kth = tf.math.top_k(logits, min(topk, logits.shape[-1] or topk)).values[:, -1:]  # (N, 1)
        logits = tf.where(logits < kth, -math.inf, logits / temperature)
        # Gumbel-max: the argmax of logits plus Gumbel noise is a draw from softmax(logits)
        uniform = generator.uniform(tf.shape(logits), minval=1e-20, maxval=1.0)
        return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)

    return cached_greedy_decoder(model, pick)


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
    k, models = beam_size, as_models(model)

    @tf.function(input_signature=DECODER_SIGNATURE)
    def decode(src, limits):
        # 1. Every sentence's rows repeated k times: row n * k + b is beam b of sentence n.
        n, (longest, width) = tf.shape(src)[0], decoding_width(limits)
        src_k, limits_k = tf.repeat(src, k, axis=0), tf.repeat(limits, k)  # (N·k, T1), (N·k,)
        enc_kvs, caches = _ensemble_start(models, src, width, k)  # on encoder outputs (N·k, T1, C)
        out, columns = _empty_output(n * k, width)  # (N·k, 1 + W), (1, 1 + W)
        # Only beam 0 is alive at first, so the k first hypotheses are k different words.
        scores = tf.tile(tf.concat([[0.0], tf.fill((k - 1,), -math.inf)], 0), [n])  # (N·k,) log-probs
        lengths = tf.zeros((n * k,), tf.int32)  # words so far, incl. </S>

        def step(i, out, scores, lengths, finished, caches):
            # 2. Log-probabilities of every next word; a finished hypothesis can only add <PAD>, at no cost.
            logits, caches = _ensemble_step(models, out[:, :-1], i, caches, enc_kvs, src_k)  # (N·k, V)
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
            caches = tf.nest.map_structure(lambda t: tf.gather(t, rows), caches)  # each (N·k, h, W, C/h)
            finished = tf.gather(finished, rows) | (word == EOS) | (i + 1 >= limits_k)  # (N·k,)
            out = tf.where(columns == i + 1, word[:, None], tf.gather(out, rows))  # (N·k, 1 + W)
            return i + 1, out, scores, tf.gather(grown, rows), finished, caches

        def not_done(i, *state):
            return ~tf.reduce_all(state[3])

        loop = (0, out, scores, lengths, limits_k <= 0, caches)
        _, out, scores, lengths, _, _ = tf.while_loop(not_done, step, loop)
        # The last top_k ranked by these same scores, so the beams are already best first.
        final = scores / length_penalty(lengths, alpha)
        return tf.reshape(out[:, 1:longest + 1], (n, k, -1)), tf.reshape(final, (n, k))  # (N, k, L), (N, k)

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


def make_decoder(model, beam_size, alpha, sampling=None):
    """(src, limits) -> (ids (N, k, L) best first, scores (N, k)) whatever the beam size: beam search,
    or for beam_size 1 the cached greedy decoder's output as one hypothesis of score 0; with sampling
    (topk, temperature, seed), sampling_decoder()'s. model: one model or a list (an ensemble)."""
    if beam_size > 1:
        return beam_search_decoder(model, beam_size, alpha)
    greedy = sampling_decoder(model, *sampling) if sampling else cached_greedy_decoder(model)

    def decode(src, limits):
        ids = greedy(src, limits)  # (N, L)
        return ids[:, None], tf.zeros((tf.shape(ids)[0], 1))

    return decode

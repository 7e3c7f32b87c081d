"""Decoding: a trained Transformer's translations, one word per step, inside one tf.function.

    greedy_decoder         reruns the decoder on the whole prefix each step (the plain reference)
    cached_greedy_decoder  computes the newest position only, with cached keys and values
    beam_search_decoder    keeps the beam_size best hypotheses per sentence, on the cached decoder
    sampling_decoder       the cached greedy loop, drawing each word at random among the K likeliest

All take (src ids (N, T1) int32, limits (N,) int32), where limits come from
decode_limits(), and stop once every sentence has emitted </S> or reached its
limit. The engines (engine.py, inference.py) run one of them over batches of
sentences.

The cached decoders keep each batch's keys and values in caches as long as
its longest translation rounded up to a multiple of shapes.SHAPE_STEP:
every step of a batch computes on the same shapes, and batches share a few.
(Caches that grew by one position per step gave each step shapes of its own,
and on a CPU TensorFlow's oneDNN kernels keep what they prepare for each
shape: docs/notes/2026-12-04-lab-notebook.md measures what that held.)

Each takes a model.Transformer, or an inference.Ensemble of models that share
a vocab, which decodes as one model (its next-word scores are the mean of its
models' log-probabilities).
"""
import math

import tensorflow as tf

import shapes
from vocab import BOS, EOS, PAD


DECODER_SIGNATURE = [shapes.IDS, tf.TensorSpec((None,), tf.int32)]

# The beam's length penalty is an input of its traced search, not a constant in it: a new value does not
# trace (and build) the search again.
LENGTH_PENALTY = tf.TensorSpec((), tf.float32)


def decode_limits(src, hp):
    """engines.decode_limit() of each source sentence, in the graph: the longest translation allowed, incl.
    </S>: its length + hp.decode_extra, at most hp.decode_cap. src ids (N, T1) -> (N,) int32."""
    lengths = tf.reduce_sum(tf.cast(src != PAD, tf.int32), axis=1)  # (N,), incl. </S>
    return tf.minimum(lengths + hp.decode_extra, hp.decode_cap)


def only_words(logits):
    """logits (N, V) with those of <PAD> and <S>, which are not words, set to -inf."""
    not_words = tf.reduce_any(tf.range(tf.shape(logits)[-1])[:, None] == [PAD, BOS], axis=-1)  # (V,)
    return tf.where(not_words, tf.constant(-math.inf, logits.dtype), logits)


def decoding_width(limits):
    """(N,) limits -> the longest translation of the batch, max(limits), and the width the cached
    decoders work in: that rounded up to a multiple of shapes.SHAPE_STEP."""
    longest = tf.reduce_max(limits)
    return longest, shapes.round_up(longest)


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

    @tf.function(input_signature=DECODER_SIGNATURE, autograph=False)
    def decode(src, limits):
        enc = model.encode(src)  # (N, T1, C)

        def next_logits(out, i, state):
            return model.decode(out[:, :i + 1], enc, src)[:, -1], state

        return _greedy_loop(src, limits, next_logits)

    return decode


def cached_greedy_decoder(model, pick=None):
    """A compiled greedy decoder that computes only the newest position at each step.

    Same signature and output as greedy_decoder(); every step does the same work:
    one position through the decoder, attending over all decoding_width() cached
    positions, masked beyond the prefix. pick: see _greedy_loop().
    """
    @tf.function(input_signature=DECODER_SIGNATURE, autograph=False)
    def decode(src, limits):
        enc_kvs, caches = model.start_decoding(src, decoding_width(limits)[1])

        def next_logits(out, i, caches):
            return model.decode_step(out[:, :-1], i, caches, enc_kvs, src)

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


def _first_not_ending(word, k):
    """The positions of the first k candidates that are not </S>, in order: word (N, 2k) -> (N, k).
    (A beam has one </S> among its continuations, so k beams leave at least k others among 2k.)"""
    position = tf.range(tf.shape(word)[1])[None, :]  # (1, 2k)
    return tf.math.top_k(tf.where(word == EOS, -2 * k, -position), k).indices  # (N, k)


def _add_finished(kept, new, size):
    """The `size` finished hypotheses of each sentence with the highest log-probabilities, of those kept so far
    and those finished at this step: each (ids (N, ·, 1 + W), log-probabilities (N, ·) (-inf: none), lengths
    (N, ·))."""
    ids, logp, lengths = (tf.concat([a, b], axis=1) for a, b in zip(kept, new))
    best = tf.math.top_k(logp, size).indices  # (N, size)
    return tuple(tf.gather(t, best, batch_dims=1) for t in (ids, logp, lengths))


def beam_search_decoder(model, beam_size, alpha):  # long: its steps share one traced function's state
    """A compiled batched beam search on the cached decoder, the one CTranslate2 runs (and fairseq's).

    (src (N, T1) int32, limits (N,) int32) -> ids (N, k, max(limits)), best
    hypothesis first, and their scores (N, k): log-probability / length_penalty.
    At each step a sentence's k alive hypotheses give their 2k continuations
    of highest log-probability; those of the first k that end in </S> (all k at
    the sentence's limit) are finished, and the first k that do not are alive.
    A sentence is done once k hypotheses have finished; its k finished ones of
    highest log-probability are then ranked by log-probability divided by the
    length penalty. With k = 1 this is greedy decoding.

    alpha: the length penalty, unless a call gives another (decode(src, limits, alpha)), which runs the
    same traced search.
    """
    k, default_alpha = beam_size, alpha

    @tf.function(input_signature=[*DECODER_SIGNATURE, LENGTH_PENALTY], autograph=False)
    def search(src, limits, alpha):
        # 1. Every sentence's rows repeated k times: row n * k + b is beam b of sentence n.
        n, (longest, width) = tf.shape(src)[0], decoding_width(limits)
        src_k = tf.repeat(src, k, axis=0)  # (N·k, T1)
        enc_kvs, caches = model.start_decoding(src, width, k)  # on encoder outputs (N·k, T1, C)
        out, columns = _empty_output(n * k, width)  # (N·k, 1 + W), (1, 1 + W)
        # Only beam 0 is alive at first, so the first candidates are different words.
        scores = tf.tile(tf.concat([[0.0], tf.fill((k - 1,), -math.inf)], 0), [n])  # (N·k,) log-probs
        none = (tf.zeros((n, 2 * k, width + 1), tf.int32), tf.fill((n, 2 * k), -math.inf), tf.zeros((n, 2 * k)))

        def step(i, out, scores, caches, finished):
            # 2. The 2k likeliest continuations of each sentence: which beam they extend, which word.
            logits, caches = model.decode_step(out[:, :-1], i, caches, enc_kvs, src_k)  # (N·k, V)
            vocab = tf.shape(logits)[1]
            candidates = scores[:, None] + tf.nn.log_softmax(only_words(tf.cast(logits, tf.float32)))  # (N·k, V)
            top, best = tf.math.top_k(tf.reshape(candidates, (n, k * vocab)), 2 * k)  # (N, 2k)
            rows, word = tf.range(n)[:, None] * k + best // vocab, best % vocab  # (N, 2k)
            grown = tf.where(columns[None] == i + 1, word[..., None], tf.gather(out, rows))  # (N, 2k, 1 + W)
            # 3. The first k that end (or all k at the limit) finish, unless the sentence is done already.
            ends = (word[:, :k] == EOS) | (i + 1 >= limits)[:, None]  # (N, k)
            ends &= (tf.math.count_nonzero(finished[1] > -math.inf, axis=1) < k)[:, None]
            new = (grown[:, :k], tf.where(ends, top[:, :k], -math.inf), tf.fill((n, k), tf.cast(i + 1, tf.float32)))
            finished = _add_finished(finished, new, 2 * k)
            # 4. The first k that do not end are alive: every per-hypothesis state follows its beam.
            alive = _first_not_ending(word, k)  # (N, k)
            rows = tf.reshape(tf.gather(rows, alive, batch_dims=1), (-1,))  # (N·k,)
            caches = tf.nest.map_structure(lambda t: tf.gather(t, rows), caches)  # each (N·k, h, W, C/h)
            out = tf.reshape(tf.gather(grown, alive, batch_dims=1), (n * k, -1))  # (N·k, 1 + W)
            return i + 1, out, tf.reshape(tf.gather(top, alive, batch_dims=1), (-1,)), caches, finished

        def not_done(i, out, scores, caches, finished):
            return tf.reduce_any(tf.math.count_nonzero(finished[1] > -math.inf, axis=1) < k)

        _, _, _, _, (ids, logp, lengths) = tf.while_loop(not_done, step, (0, out, scores, caches, none))
        # 5. The k of highest log-probability (the first k), ranked by log-probability / length penalty.
        final = logp[:, :k] / length_penalty(lengths[:, :k], alpha)  # (N, k)
        order = tf.argsort(final, axis=1, direction="DESCENDING", stable=True)
        ids = tf.gather(ids[:, :k, 1:longest + 1], order, batch_dims=1)  # (N, k, L)
        return ids, tf.gather(final, order, batch_dims=1)  # (N, k, L), (N, k)

    def decode(src, limits, alpha=None):
        return search(src, limits, tf.constant(default_alpha if alpha is None else alpha, tf.float32))

    decode.search = search  # for the tests: how often it was traced
    return decode


def make_decoder(model, beam_size, alpha, sampling=None):
    """(src, limits[, alpha]) -> (ids (N, k, L) best first, scores (N, k)) whatever the beam size: beam
    search (alpha: its length penalty, if not the one given here), or for beam_size 1 the cached greedy
    decoder's output as one hypothesis of score 0; with sampling (topk, temperature, seed),
    sampling_decoder()'s."""
    if beam_size > 1:
        return beam_search_decoder(model, beam_size, alpha)
    greedy = sampling_decoder(model, *sampling) if sampling else cached_greedy_decoder(model)

    def decode(src, limits, alpha=None):  # one hypothesis: no length penalty to apply
        ids = greedy(src, limits)  # (N, L)
        return ids[:, None], tf.zeros((tf.shape(ids)[0], 1))

    return decode

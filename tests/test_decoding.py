"""Beam search: exact on a search space small enough to enumerate, and greedy at beam size 1."""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SMALL, TWO_SRC, decoders_on_test_set, fresh_model
from decoding import beam_search_decoder, cached_greedy_decoder, decode_limits, make_decoder, only_words
from hyperparams import Hyperparams
from model import build_model
from vocab import BOS, EOS, PAD

VOCAB = 6  # <PAD> <UNK> <S> </S> and two words: each step chooses among <UNK>, </S>, 4 and 5

WORDS = (1, EOS, 4, 5)

SRC = tf.constant([[4, 5, EOS, PAD], [5, 4, 4, EOS], [4, EOS, PAD, PAD]])


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return build_model(Hyperparams(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=8),
                       VOCAB, VOCAB)


def log_probs(model, src, sequences):
    """log p(words | src) of each word sequence by the full decoder, in one batch, with <PAD> and <S>
    excluded as the decoders exclude them."""
    width = max(map(len, sequences))
    tgt_in = tf.constant([[BOS, *words[:-1]] + [PAD] * (width - len(words)) for words in sequences])
    logits = model((tf.repeat(src[None], len(sequences), axis=0), tgt_in))  # (S, width, V)
    logp = tf.nn.log_softmax(only_words(logits)).numpy()
    return np.array([sum(row[t, w] for t, w in enumerate(words)) for row, words in zip(logp, sequences)])


def every_translation(limit):
    """All word sequences a decoder may produce: ending in </S>, or of the limit's length."""
    for length in range(1, limit + 1):
        for words in itertools.product(WORDS, repeat=length):
            if EOS not in words[:-1] and (words[-1] == EOS or length == limit):
                yield list(words)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_beam_wide_enough_finds_the_best_translation(model, alpha):
    limit = 3  # 4 + 12 + 48 = 64 sequences at most: a beam of 64 never drops one
    ids, scores = beam_search_decoder(model, 64, alpha)(SRC, tf.fill((3,), limit))
    for src, rows, row_scores in zip(SRC, ids.numpy(), scores.numpy()):
        found = [int(i) for i in rows[0] if i != PAD]
        sequences = [*every_translation(limit), found]
        penalties = np.array([((5 + len(words)) / 6) ** alpha for words in sequences])
        scored = log_probs(model, src, sequences) / penalties
        assert row_scores[0] == pytest.approx(scored[:-1].max(), abs=1e-4)  # the best of all ...
        assert scored[-1] == pytest.approx(scored[:-1].max(), abs=1e-4)  # ... is what the ids say
        assert np.all(np.diff(row_scores[np.isfinite(row_scores)]) <= 1e-6)  # best first


def test_a_narrow_beam_returns_valid_hypotheses_best_first(model):
    ids, scores = beam_search_decoder(model, 3, 0.6)(SRC, tf.constant([5, 2, 4]))
    assert ids.shape == (3, 3, 5) and scores.shape == (3, 3)
    for rows, limit, row_scores in zip(ids.numpy(), [5, 2, 4], scores.numpy()):
        assert list(row_scores) == sorted(row_scores, reverse=True)
        for row in rows:
            words = [int(i) for i in row if i != PAD]
            assert 1 <= len(words) <= limit and EOS not in words[:-1]
            assert all(i == PAD for i in row[len(words):])  # padding only after the end


def test_beam_size_one_is_greedy_decoding(model):
    limits = tf.constant([7, 7, 7])
    ids, _ = beam_search_decoder(model, 1, 0.6)(SRC, limits)
    np.testing.assert_array_equal(ids[:, 0], cached_greedy_decoder(model)(SRC, limits))


def test_sampling_is_seeded_and_top_1_is_greedy():
    model = fresh_model()
    src = tf.concat(TWO_SRC, 0)
    limits = decode_limits(src, Hyperparams(**SMALL))
    greedy = cached_greedy_decoder(model)(src, limits).numpy()
    np.testing.assert_array_equal(make_decoder(model, 1, 0.6, (1, 0.7, 5))(src, limits)[0][:, 0], greedy)
    draws = [make_decoder(model, 1, 0.6, (13, 1.5, seed))(src, limits)[0].numpy() for seed in (5, 5, 6)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0][:, 0, :greedy.shape[1]], greedy)


@pytest.mark.e2e
def test_cached_decoding_equals_full_decoding_on_a_barely_trained_model(trained_model):
    full, cached, beam_one = decoders_on_test_set(trained_model[1])  # long, rambling translations up to the limits
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_array_equal(beam_one, full)
    assert full.shape[1] > 20


@pytest.fixture(scope="module")
def wide_model():
    keras.utils.set_random_seed(2)
    return build_model(Hyperparams(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=12,
                                   sinusoid=True), 12, 12)


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_padding_a_source_batch_to_a_wider_shape_leaves_the_translations_alone(wide_model, decoder):
    decode = cached_greedy_decoder(wide_model) if decoder == "greedy" else beam_search_decoder(wide_model, 3, 0.6)
    src = tf.constant([[4, 5, 6, EOS, PAD], [7, 8, 9, 10, EOS], [11, EOS, PAD, PAD, PAD]])
    hp = Hyperparams(maxlen=12, sinusoid=True, decode_extra=4)
    limits = decode_limits(src, hp)
    wider = tf.pad(src, [[0, 0], [0, 11]])  # 16 columns, as a multiple of SHAPE_STEP would give
    assert (decode_limits(wider, hp).numpy() == limits.numpy()).all()
    narrow, wide = decode(src, limits), decode(wider, limits)
    if decoder == "beam":
        np.testing.assert_allclose(narrow[1], wide[1], rtol=1e-5)  # the scores too
        narrow, wide = narrow[0], wide[0]
    np.testing.assert_array_equal(narrow, wide)

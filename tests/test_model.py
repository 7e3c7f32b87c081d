
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fresh_model
from decoding import cached_greedy_decoder, decode_limits, greedy_decoder, only_words
from hyperparams import Hyperparams
from model import build_model, shift_right
from modules import FeedForward
from vocab import BOS, EOS, PAD

SMALL = dict(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=8)


@pytest.fixture(scope="module", params=[(True, "post"), (False, "post"), (True, "pre")],
                ids=["sinusoid", "learned", "pre-norm"])
def model(request):
    keras.utils.set_random_seed(0)
    sinusoid, norm_position = request.param
    return build_model(Hyperparams(**SMALL, sinusoid=sinusoid, norm_position=norm_position), 11, 13)


SRC = tf.constant([[4, 5, 6, EOS, PAD, PAD], [7, 8, EOS, PAD, PAD, PAD]])

TGT_IN = tf.constant([[BOS, 4, 9, 10, 5], [BOS, 6, 7, 8, 12]])


def test_shapes_and_shift_right(model):
    assert model((SRC, TGT_IN)).shape == (2, 5, 13)
    np.testing.assert_array_equal(shift_right(tf.constant([[4, 5, EOS, PAD]])), [[BOS, 4, 5, EOS]])


def test_changing_a_future_target_word_leaves_earlier_outputs(model):
    logits = model((SRC, TGT_IN))
    changed = tf.concat([TGT_IN[:, :3], tf.constant([[11], [3]]), TGT_IN[:, 4:]], axis=1)
    changed_logits = model((SRC, changed))
    np.testing.assert_allclose(changed_logits[:, :3], logits[:, :3], rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed_logits[:, 3:], logits[:, 3:])


def test_extra_source_padding_changes_nothing(model):
    logits = model((SRC, TGT_IN))
    padded = tf.pad(SRC, [[0, 0], [0, 2]])  # two more pad columns
    np.testing.assert_allclose(model((padded, TGT_IN)), logits, rtol=1e-5, atol=1e-5)


def step_by_step(model, src, limit):
    """Greedy decoding of one sentence in plain Python, the slowest and simplest way."""
    prefix = [BOS]
    while len(prefix) <= limit and prefix[-1] != EOS:
        logits = model((src[None], tf.constant([prefix])))
        prefix.append(int(tf.argmax(only_words(logits[:, -1])[0])))  # <PAD> and <S> are not words
    return prefix[1:]


@pytest.mark.parametrize("make_decoder", [greedy_decoder, cached_greedy_decoder], ids=["full", "cached"])
def test_greedy_decoders_match_a_step_by_step_loop(model, make_decoder):
    limits = tf.constant([6, 3])  # the longest translation of each sentence, incl. </S>
    out = make_decoder(model)(SRC, limits).numpy()
    assert out.shape == (2, 6)
    for row, src, limit in zip(out, SRC, limits.numpy()):
        expected = step_by_step(model, src, limit)
        np.testing.assert_array_equal(row, expected + [PAD] * (6 - len(expected)))


def test_decode_step_equals_the_full_decoder_at_every_position(model):
    enc = model.encode(SRC)
    enc_kvs = model.encoder_keys_values(enc)
    full = model.decode(TGT_IN, enc, SRC)  # (N, T2, V)
    # the caches' width, 8, is wider than the 5 positions; the words after the step's position
    # (here the rest of the target, then 3s) must not be looked at
    tokens = tf.concat([TGT_IN, tf.fill((2, 3), 3)], axis=1)  # (2, 8)
    caches = model.empty_caches(2, 8, enc.dtype)
    step = tf.function(model.decode_step)
    for t in range(TGT_IN.shape[1]):
        logits, caches = step(tokens, tf.constant(t), caches, enc_kvs, SRC)
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-5, atol=1e-5)
        assert [c.shape for c in caches[0]] == [(2, 2, 8, 16 // 2)] * 2  # (N, h, width, C/h), every step
    assert step.experimental_get_tracing_count() == 1  # one shape for every position


def test_decode_limits():
    limits = decode_limits(SRC, Hyperparams(decode_extra=50, decode_maxlen=54))  # source lengths incl. </S>: 4 and 3
    np.testing.assert_array_equal(limits, [54, 53])


@pytest.mark.parametrize("settings", [{}, {"norm_position": "pre", "share_embeddings": True, "vocab_type": "subword"}],
                         ids=["post-norm", "pre-norm-shared"])
def test_every_weight_is_made_from_the_settings_without_tracing_call(settings, monkeypatch):
    traced = []  # Keras traces call() in a graph to find the weights of a layer that does not make them itself
    trace = keras.src.backend.compute_output_spec
    monkeypatch.setattr(keras.src.backend, "compute_output_spec", lambda *a, **k: traced.append(a) or trace(*a, **k))
    made = build_model(Hyperparams(**SMALL, **settings), 11, 11)
    assert not traced and made.built and all(layer.built for layer in made._flatten_layers())
    assert len(made.weights) == len(made.get_weights()) > 0


def test_checkpoint_holds_every_weight(model, tmp_path):
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
    assert len(saved) == len(model.weights)
    fresh = build_model(Hyperparams(**SMALL, sinusoid=model.src_positions.table is None,
                                    norm_position="post" if model.encoder_norm is None else "pre"), 11, 13)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_shared_embeddings_tie_source_target_and_output_layer(tmp_path):
    keras.utils.set_random_seed(0)
    shared = build_model(Hyperparams(**SMALL, vocab_type="subword", share_embeddings=True), 13, 13)
    separate = build_model(Hyperparams(**SMALL), 13, 13)
    assert shared.src_embedding is shared.tgt_embedding
    assert len(shared.trainable_variables) == len({id(v) for v in shared.trainable_variables})
    assert separate.count_params() - shared.count_params() == 2 * 13 * 16  # a table and a kernel fewer
    y = tf.random.normal((2, 3, 16))
    expected = tf.matmul(y, shared.src_embedding.table, transpose_b=True) + shared.output_projection.bias
    np.testing.assert_allclose(shared.logits(y), expected, rtol=1e-5, atol=1e-5)
    path = tf.train.Checkpoint(model=shared).write(str(tmp_path / "ckpt"))
    fresh = build_model(Hyperparams(**SMALL, vocab_type="subword", share_embeddings=True), 13, 13)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    np.testing.assert_allclose(fresh((SRC, TGT_IN)), shared((SRC, TGT_IN)), rtol=1e-6)


def test_residual_dropout_acts_in_training_only():
    keras.utils.set_random_seed(0)
    model = build_model(Hyperparams(**SMALL, residual_dropout=0.5), 11, 13)
    inference = model((SRC, TGT_IN))
    np.testing.assert_array_equal(model((SRC, TGT_IN)), inference)
    assert not np.allclose(model((SRC, TGT_IN), training=True), inference)


def test_attention_maps_are_distributions_over_the_keys_allowed(model):
    maps = model.attention_maps(SRC, TGT_IN)
    assert [w.shape for w in maps["encoder self-attention"]] == [(2, 2, 6, 6)] * 2
    assert [w.shape for w in maps["cross-attention"]] == [(2, 2, 5, 6)] * 2
    encoder = maps["encoder self-attention"][0].numpy()
    np.testing.assert_allclose(encoder[0, :, :4].sum(-1), 1, rtol=1e-5)  # real queries of sentence 0 ...
    assert np.all(encoder[0, :, :, 4:] == 0) and np.all(encoder[0, :, 4:] == 0)  # ... never see or are pads
    decoder = maps["decoder self-attention"][1].numpy()
    assert np.all(np.triu(decoder[0, 0], k=1) == 0)  # no position sees a later one


def test_pre_norm_normalises_each_sublayer_input_and_leaves_the_residual_path_alone():
    x = tf.random.stateless_normal((2, 3, 8), seed=(1, 2))
    for pre in (False, True):
        layer = FeedForward(units=8, inner_units=16, pre_norm=pre)
        out = layer(x)
        inner = layer.inner(layer.norm(x) if pre else x)
        expected = x + layer.outer(inner) if pre else layer.norm(x + layer.outer(inner))
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    model = fresh_model(norm_position="pre")
    assert model.encoder_norm is not None and model.decoder_norm is not None  # a final norm on each stack
    assert fresh_model().encoder_norm is None


def test_word_dropout_turns_decoder_input_words_into_unk_in_training_only():
    from modules import WordDropout
    from vocab import UNK

    ids = tf.constant(np.r_[[BOS], np.arange(4, 1004), [PAD] * 20][None].repeat(4, 0), tf.int32)
    layer = WordDropout(0.3, seed=1)
    dropped = layer(ids, training=True).numpy()
    changed = dropped != ids.numpy()
    assert set(dropped[changed]) == {UNK}
    assert not changed[:, 0].any() and not changed[:, -20:].any()  # <S> and padding stay
    assert 0.25 < changed[:, 1:1001].mean() < 0.35
    assert (layer(ids, training=True).numpy() != dropped).any()  # a new mask at every step
    again = WordDropout(0.3, seed=1)
    np.testing.assert_array_equal(again(ids, training=True), dropped)  # from the seed
    np.testing.assert_array_equal(layer(ids, training=False), ids)


def test_word_dropout_changes_training_passes_only_and_not_the_initial_weights():
    plain, dropping = fresh_model(), fresh_model(word_dropout=0.5)
    assert [w.name for w in plain.weights] == [w.name for w in dropping.weights]
    for a, b in zip(plain.weights, dropping.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    tgt = tf.constant([[4, 9, 10, 3], [6, 7, 3, 0]])
    src = tf.constant([[4, 5, 6, 3], [7, 8, 3, 0]])
    np.testing.assert_array_equal(plain.teacher_forced(src, tgt), dropping.teacher_forced(src, tgt))
    assert not np.allclose(plain.teacher_forced(src, tgt, training=True),
                           dropping.teacher_forced(src, tgt, training=True))
    state = {id(v) for v in dropping.word_dropout.variables}  # its random state: saved with the checkpoint's rng
    assert state and state <= {id(v) for v in dropping.variables} - {id(w) for w in dropping.weights}

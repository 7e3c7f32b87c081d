"""inference.py: a trained model loaded with its weights (the moving average, an ensemble), the TensorFlowEngine."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import shapes
import eval as evaluate
import export
import hyperparams
import plot_attention
import prepro
import train
import translate
from cli import parse_args
from conftest import SMALL, TINY_MODEL, TWO_SRC, corpus_flags, fails, flag, fresh_model, toy_pairs, values
from decoding import decode_limits, make_decoder
from hyperparams import Hyperparams
from inference import Ensemble, TensorFlowEngine, load_engine, load_trained, mean_log_probs
from messages import UserError


def test_ensembles_combine_log_probabilities():
    a, b = tf.random.stateless_normal((3, 13), seed=(1, 1)), tf.random.stateless_normal((3, 13), seed=(2, 2))
    np.testing.assert_allclose(mean_log_probs([a]), tf.nn.log_softmax(a), rtol=1e-6)  # one model: its log-probabilities
    np.testing.assert_allclose(mean_log_probs([a, b]), (tf.nn.log_softmax(a) + tf.nn.log_softmax(b)) / 2, rtol=1e-6)
    model, other = fresh_model(), fresh_model(dropout_rate=0.1, hidden_units=8)
    src = tf.concat(TWO_SRC, 0)
    limits = decode_limits(src, Hyperparams(**SMALL))
    for beam in (1, 3):  # a model twice is the model alone
        alone, twice = (make_decoder(m, beam, 0.6)(src, limits)[0].numpy() for m in (model, Ensemble([model, model])))
        np.testing.assert_array_equal(alone, twice)
    assert make_decoder(Ensemble([model, other]), 3, 0.6)(src, limits)[0].shape[:2] == (4, 3)


@pytest.mark.e2e
def test_training_counts_optimizer_steps_and_evaluation_uses_the_average(averaged_model):
    averaged = averaged_model
    hp = hyperparams.for_evaluation(parse_args(averaged, description="")[0])
    assert hp.ema_decay == 0.9
    assert tf.train.latest_checkpoint(hp.logdir).endswith("model_epoch_02_gs_20")  # 40 batches, 20 steps
    average = values(load_trained(hp).model)
    raw = load_trained(hp, parse_args(averaged + ["--raw_weights"], description="", add_arguments=add_flags)[1])
    assert raw.name.endswith("_raw")
    assert not all(np.array_equal(a, b) for a, b in zip(average, values(raw.model)))
    reader = tf.train.load_checkpoint(hp.logdir)  # the raw weights are the model's in the checkpoint
    saved = {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(hp.logdir)
             if name.startswith("model/")}
    assert any(np.array_equal(values(raw.model)[0], v) for v in saved.values())
    assert not any(np.array_equal(average[0], v) for v in saved.values())


def add_flags(parser):
    import engines
    engines.add_model_flags(parser, ensemble=True)


@pytest.mark.e2e
def test_an_ensemble_member_on_another_vocab_is_refused(averaged_model, tmp_path):
    averaged = averaged_model
    other = corpus_flags(tmp_path, toy_pairs(100, seed=9, reverse=True), toy_pairs(5, seed=2)) + ["--maxlen", "10"]
    prepro.main(other)
    train.main(other + TINY_MODEL + ["--batch_size", "16", "--num_epochs", "1"])
    with pytest.raises(UserError, match="is not the one the model in .* was trained with"):
        evaluate.main(averaged + ["--ensemble", str(tmp_path / "logdir")])


@pytest.mark.e2e
@pytest.mark.parametrize("script", ["eval.py", "translate.py", "export.py", "plot_attention.py"])
def test_a_vocab_rebuilt_since_training_is_refused_everywhere(trained_copy, tmp_path, script, capsys, monkeypatch):
    directory, flags = trained_copy
    # the same words, so the same vocab size, in another order of frequency: other ids
    swapped = [(s, t) for s, t in toy_pairs(64, seed=1)] + [("zwoelf elf", "twelve eleven")] * 9
    rebuilt = corpus_flags(tmp_path, swapped, toy_pairs(2, seed=2))[:4]
    prepro.main(rebuilt + ["--vocab_dir", flag(flags, "vocab_dir")])
    main = {"eval.py": evaluate.main, "translate.py": translate.main, "export.py": export.main,
            "plot_attention.py": plot_attention.main}[script]
    own = {"translate.py": ["eins"], "export.py": ["--out", tmp_path / "x"],
           "plot_attention.py": ["--out", tmp_path / "a.png", "eins"]}.get(script, [])
    line = fails(main, script, flags + own, capsys, monkeypatch)
    assert "is not the one the model in" in line and "was trained with (it was rebuilt since)" in line


def beam_engine(trained_model, beam):
    """(settings, the TensorFlowEngine) of the session's model with beam search `beam` wide, as many kept."""
    hp = dataclasses.replace(hyperparams.for_evaluation(parse_args(trained_model[1], description="")[0]),
                             beam_size=beam)
    return hp, load_engine(hp, nbest=beam)


@pytest.mark.e2e
def test_another_length_penalty_runs_the_search_already_traced(trained_model):
    # serve.py makes a variant of its engine for each length_penalty a client sends, in the one model thread
    hp, engine = beam_engine(trained_model, 3)
    lines = ["eins zwei drei", "vier fuenf sechs sieben acht", "neun"]
    engine(lines)
    scores, searches = {}, {engine.decode.search}
    for alpha in (0.0, 0.6, 2.0):
        variant = engine.variant(length_penalty=alpha)
        got = variant(lines)
        made_anew = TensorFlowEngine(engine.model, engine.src_vocab, engine.tgt_vocab,
                                     dataclasses.replace(hp, length_penalty=alpha), nbest=3)(lines)
        assert got == made_anew  # the same translations and scores as a decoder made for this penalty
        scores[alpha] = [score for hypotheses in got for _, score in hypotheses]
        searches.add(variant.decode.search)
    assert sum(search.experimental_get_tracing_count() for search in searches) == 1  # one trace for all
    assert scores[0.0] != scores[0.6] != scores[2.0]  # each with its own penalty


@pytest.mark.e2e
def test_a_batch_of_any_size_is_decoded_in_one_of_a_few_shapes_and_the_same_translations(trained_model):
    # each shape a decoder meets keeps TensorFlow's kernels and buffers for it: a server grew for hours
    _, engine = beam_engine(trained_model, 2)
    decode, sizes = engine.decode, []
    engine.decode = lambda src, limits, alpha: sizes.append(src.shape[0]) or decode(src, limits, alpha)
    lines = [german for german, _ in toy_pairs(9, seed=4)]
    alone = [engine([line])[0] for line in lines]
    for n in range(1, 10):
        together = engine(lines[:n])
        assert [[text for text, _ in found] for found in together] == [[text for text, _ in a] for a in alone[:n]]
        assert [score for found in together for _, score in found] == pytest.approx(
            [score for a in alone[:n] for _, score in a], abs=1e-4)
    assert set(sizes) == {1, 2, 4, 8, 16}  # 1 .. 9 sentences
    targets = [a[0][0] for a in alone[:3]]
    assert engine.score(lines[:3], targets) == pytest.approx(
        [engine.score([s], [t])[0] for s, t in zip(lines[:3], targets)], abs=1e-4)


def test_a_source_batch_is_cut_to_a_multiple_of_the_shape_step():
    from inference import source_batch

    rows = [[4] * length for length in [3, 9, 17, 2, 1, 40, 5]]
    assert [source_batch(rows[i:i + 2]).shape[1] for i in range(0, 7, 2)] == [16, 24, 40, 8]
    assert [shapes.round_up(n) for n in (1, 8, 9, 16)] == [8, 8, 16, 16]

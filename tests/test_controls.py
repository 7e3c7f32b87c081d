"""The training and decoding controls: pre-norm, gradient accumulation, recomputation, the weights' moving
average, R-Drop, schedules that end at a step, early stopping, ensembles, scoring and sampling."""
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import eval as evaluate
import hyperparams
import model as model_module
import prepro
import score
import train
import translate
from messages import UserError
from conftest import ROOT, TINY_MODEL, corpus_flags, toy_pairs
from decoding import cached_greedy_decoder, decode_limits, make_decoder
from cli import parse_args
from hyperparams import Hyperparams
from inference import load_trained
from model import build_model
from modules import FeedForward, rdrop_kl
from inference import Ensemble, mean_log_probs
from optimizer import DecayingSchedule, PaperSchedule, averaged_weights, make_optimizer
from training import TrainStep
from vocab import EOS, PAD

SMALL = dict(hidden_units=16, num_blocks=2, num_heads=2, dropout_rate=0.0, maxlen=8)
# two batches of the same width with different numbers of target words (7 and 4)
SRC = [tf.constant([[4, 5, 6, EOS], [7, 8, EOS, PAD]]), tf.constant([[9, EOS, PAD, PAD], [5, 6, 7, EOS]])]
TGT = [tf.constant([[4, 9, 10, EOS], [6, 7, EOS, PAD]]), tf.constant([[8, EOS, PAD, PAD], [5, EOS, PAD, PAD]])]


def fresh_model(**settings):
    keras.utils.set_random_seed(0)  # the same initial weights every time
    return build_model(Hyperparams(**{**SMALL, **settings}), 11, 13)


def values(model):
    return [v.numpy() for v in model.trainable_variables]


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


def test_accumulated_batches_give_the_update_of_one_batch_holding_them_all():
    accumulated, whole = fresh_model(), fresh_model()
    start = values(accumulated)
    step = TrainStep(accumulated, keras.optimizers.SGD(1.0), 0.1, accumulate=2)
    step([(SRC[0], TGT[0]), (SRC[1], TGT[1])])  # one optimizer step: the first batch only adds to the sums
    for total in step.sums:  # which are empty again after the update
        np.testing.assert_array_equal(total.numpy(), 0.0)
    assert float(step.words.numpy()) == 0.0
    TrainStep(whole, keras.optimizers.SGD(1.0), 0.1)([(tf.concat(SRC, 0), tf.concat(TGT, 0))])
    assert int(step.optimizer.iterations) == 1
    assert not all(np.array_equal(a, s) for a, s in zip(values(accumulated), start))
    for a, b in zip(values(accumulated), values(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_recomputed_blocks_give_the_update_of_blocks_kept_for_the_backward_pass(monkeypatch):
    """--recompute: the blocks run again in the backward pass, with the dropout masks of the forward pass."""
    dropout = dict(dropout_rate=0.3, residual_dropout=0.3, ff_dropout=0.3, recompute=True)
    recomputing, keeping = fresh_model(**dropout), fresh_model(**dropout)
    TrainStep(recomputing, keras.optimizers.SGD(1.0), 0.1)([(SRC[0], TGT[0])])
    # the same seeds, each block's activations kept as without --recompute
    monkeypatch.setattr(model_module, "recomputed", lambda block, hidden, *, enc=None, **kwargs: block(
        hidden, training=True, **kwargs, **({} if enc is None else {"enc": enc}))[0])
    TrainStep(keeping, keras.optimizers.SGD(1.0), 0.1)([(SRC[0], TGT[0])])
    for a, b in zip(values(recomputing), values(keeping)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    without_dropout = fresh_model(recompute=True)
    TrainStep(without_dropout, keras.optimizers.SGD(1.0), 0.1)([(SRC[0], TGT[0])])
    assert not all(np.allclose(a, b) for a, b in zip(values(recomputing), values(without_dropout)))


@pytest.mark.parametrize("before, after", [(False, True), (True, False)], ids=["switched-on", "switched-off"])
def test_a_run_resumes_with_recompute_switched_on_or_off(tmp_path, before, after):
    """A run that ran out of memory goes on with --recompute true (and back): the checkpoints hold the same."""
    dropout = dict(dropout_rate=0.1, residual_dropout=0.1)
    saved = fresh_model(**dropout, recompute=before)
    optimizer = make_optimizer(Hyperparams(**SMALL))
    optimizer.build(saved.trainable_variables)
    TrainStep(saved, optimizer, 0.1)([(SRC[0], TGT[0])])
    checkpoints.save_checkpoint(train.make_checkpoint(saved, optimizer), str(tmp_path), "model_epoch_01_gs_1", keep=1)
    resumed = fresh_model(**dropout, recompute=after)
    optimizer = make_optimizer(Hyperparams(**SMALL))
    optimizer.build(resumed.trainable_variables)
    assert checkpoints.resume(train.make_checkpoint(resumed, optimizer), str(tmp_path))
    for a, b in zip(values(resumed), values(saved)):
        np.testing.assert_array_equal(a, b)
    TrainStep(resumed, optimizer, 0.1)([(SRC[1], TGT[1])])  # and trains on


def test_recomputing_the_blocks_lowers_the_peak_memory_of_a_training_step():
    """What --recompute is for: the backward pass holds one block's activations at a time."""
    src = tf.random.stateless_uniform((64, 32), (1, 2), 4, 11, tf.int32)
    tgt = tf.random.stateless_uniform((64, 32), (3, 4), 4, 13, tf.int32)
    peaks = {}
    for recompute in (False, True):
        model = fresh_model(hidden_units=32, num_blocks=3, maxlen=32, recompute=recompute)
        step = TrainStep(model, keras.optimizers.SGD(0.1), 0.1)
        step([(src, tgt)])  # traced, and the buffers of a step made once
        try:
            tf.config.experimental.reset_memory_stats("CPU:0")
        except ValueError:
            pytest.skip("this TensorFlow build keeps no statistics of its CPU allocator")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        step([(src, tgt)])
        peaks[recompute] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - before  # the step's own
    assert peaks[True] < 0.5 * peaks[False], peaks


@pytest.mark.parametrize("ema_decay, decay", [(0.75, 2 / 11), (0.1, 0.1)], ids=["warming-up", "capped"])
def test_the_moving_average_follows_the_weights_and_leaves_them_untouched(ema_decay, decay):
    hp = Hyperparams(**SMALL, lr_schedule="constant", lr=0.01, ema_decay=ema_decay)
    model = fresh_model()
    optimizer = make_optimizer(hp)
    step = TrainStep(model, optimizer, 0.1)
    step([(SRC[0], TGT[0])])
    first = values(model)  # the average starts as the weights after the first step
    step([(SRC[1], TGT[1])])
    second = values(model)
    # the decay after t = 1 earlier step: min(ema_decay, (1 + t) / (10 + t))
    with averaged_weights(model, optimizer):
        for average, a, b in zip(values(model), first, second):
            np.testing.assert_allclose(average, decay * a + (1 - decay) * b, rtol=1e-5, atol=1e-7)
    for weight, b in zip(values(model), second):
        np.testing.assert_array_equal(weight, b)  # bit for bit
    with averaged_weights(model, make_optimizer(Hyperparams(**SMALL))):  # no average kept: nothing changes
        for weight, b in zip(values(model), second):
            np.testing.assert_array_equal(weight, b)


def test_rdrop_adds_the_symmetric_kl_between_two_passes():
    first = tf.random.stateless_normal((2, 4, 13), seed=(3, 4))
    second = tf.random.stateless_normal((2, 4, 13), seed=(5, 6))
    p, q = tf.nn.softmax(first).numpy(), tf.nn.softmax(second).numpy()
    real = (TGT[0] != PAD).numpy()
    expected = (0.5 * ((p * np.log(p / q)).sum(-1) + (q * np.log(q / p)).sum(-1)) * real).sum()
    assert float(rdrop_kl(first, second, TGT[0])) == pytest.approx(expected, rel=1e-5)
    assert float(rdrop_kl(first, first, TGT[0])) == 0.0
    # without dropout the two passes agree: the step is the plain one, the loss the mean of the two
    plain, rdrop = fresh_model(), fresh_model()
    TrainStep(plain, keras.optimizers.SGD(1.0), 0.1)([(SRC[0], TGT[0])])
    step = TrainStep(rdrop, keras.optimizers.SGD(1.0), 0.1, rdrop_alpha=5.0)
    step([(SRC[0], TGT[0])])
    for a, b in zip(values(plain), values(rdrop)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # with dropout they differ, and the KL term changes the update
    with_dropout = [fresh_model(dropout_rate=0.3) for _ in range(2)]
    for model, alpha in zip(with_dropout, (0.0, 5.0)):
        TrainStep(model, keras.optimizers.SGD(1.0), 0.1, rdrop_alpha=alpha)([(SRC[0], TGT[0])])
    assert not all(np.allclose(a, b) for a, b in zip(*map(values, with_dropout)))


def test_schedules_that_end_at_a_step():
    paper = PaperSchedule(256, 100, scale=2.0)
    cosine = DecayingSchedule(256, 100, 2.0, kind="cosine", total=1100)
    decay = DecayingSchedule(256, 100, 2.0, kind="paper_decay", total=1000, fraction=0.2)
    peak = 2.0 * (256 * 100) ** -0.5
    for iterations in (0, 49, 98):  # the same warm-up in all three (Keras counts from 0)
        assert float(cosine(iterations)) == pytest.approx(float(paper(iterations)), rel=1e-5)
        assert float(decay(iterations)) == pytest.approx(float(paper(iterations)), rel=1e-5)
    assert float(cosine(99)) == pytest.approx(peak, rel=1e-5)
    assert float(cosine(599)) == pytest.approx(peak / 2, rel=1e-4)  # half-way down
    assert float(cosine(1099)) == pytest.approx(0.0, abs=1e-9)
    assert float(decay(799)) == pytest.approx(float(paper(799)), rel=1e-5)  # decay starts at step 800
    assert float(decay(899)) == pytest.approx(float(paper(899)) * 0.5, rel=1e-4)
    assert float(decay(999)) == pytest.approx(0.0, abs=1e-9)
    hp = Hyperparams(lr_schedule="cosine", warmup_steps=10, max_steps=50)
    optimizer = make_optimizer(hp, total_steps=999)
    optimizer.iterations.assign(49)  # the 50th step: the last of --max_steps, which wins
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


def test_ensembles_combine_log_probabilities():
    a, b = tf.random.stateless_normal((3, 13), seed=(1, 1)), tf.random.stateless_normal((3, 13), seed=(2, 2))
    np.testing.assert_allclose(mean_log_probs([a]), tf.nn.log_softmax(a), rtol=1e-6)  # one model: its log-probabilities
    np.testing.assert_allclose(mean_log_probs([a, b]), (tf.nn.log_softmax(a) + tf.nn.log_softmax(b)) / 2, rtol=1e-6)
    model, other = fresh_model(), fresh_model(dropout_rate=0.1, hidden_units=8)
    src = tf.concat(SRC, 0)
    limits = decode_limits(src, Hyperparams(**SMALL))
    for beam in (1, 3):  # a model twice is the model alone
        alone, twice = (make_decoder(m, beam, 0.6)(src, limits)[0].numpy() for m in (model, Ensemble([model, model])))
        np.testing.assert_array_equal(alone, twice)
    assert make_decoder(Ensemble([model, other]), 3, 0.6)(src, limits)[0].shape[:2] == (4, 3)


def test_sampling_is_seeded_and_top_1_is_greedy():
    model = fresh_model()
    src = tf.concat(SRC, 0)
    limits = decode_limits(src, Hyperparams(**SMALL))
    greedy = cached_greedy_decoder(model)(src, limits).numpy()
    np.testing.assert_array_equal(make_decoder(model, 1, 0.6, (1, 0.7, 5))(src, limits)[0][:, 0], greedy)
    draws = [make_decoder(model, 1, 0.6, (13, 1.5, seed))(src, limits)[0].numpy() for seed in (5, 5, 6)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    assert not np.array_equal(draws[0][:, 0, :greedy.shape[1]], greedy)


def test_conflicting_controls_are_refused():
    with pytest.raises(UserError, match="--patience 2 needs --dev_eval true"):
        Hyperparams(patience=2)
    with pytest.raises(UserError, match="--sampling_topk 5 samples one translation; .* --beam_size 4"):
        Hyperparams(sampling_topk=5, beam_size=4)
    with pytest.raises(UserError, match="--max_steps 50 ends within --warmup_steps 100"):
        Hyperparams(lr_schedule="cosine", max_steps=50, warmup_steps=100)
    with pytest.raises(UserError, match="--ema_decay must be in"):
        Hyperparams(ema_decay=1.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("controls")
    flags = corpus_flags(directory, toy_pairs(320, seed=1), toy_pairs(12, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    return directory, flags + TINY_MODEL + ["--batch_size", "16"]  # 20 batches per epoch


def with_logdir(flags, logdir):
    return [*flags[:flags.index("--logdir")], *flags[flags.index("--logdir") + 2:], "--logdir", str(logdir)]


@pytest.fixture(scope="module")
def averaged(corpus):
    """A model trained two epochs with --ema_decay, 2 batches per step, and a cosine schedule."""
    directory, flags = corpus
    flags = with_logdir(flags, directory / "ema") + ["--num_epochs", "2", "--ema_decay", "0.9",
                                                     "--accumulate", "2", "--lr_schedule", "cosine",
                                                     "--warmup_steps", "4", "--lr_scale", "0.1"]
    train.main(flags)
    return flags


def test_training_counts_optimizer_steps_and_evaluation_uses_the_average(averaged):
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


def test_max_steps_ends_training_mid_epoch(corpus, capsys):
    directory, flags = corpus
    flags = with_logdir(flags, directory / "steps") + ["--num_epochs", "5", "--max_steps", "7"]
    train.main(flags)
    assert "reached --max_steps 7: training ends" in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(directory / "steps")).endswith("model_epoch_01_gs_7")
    train.main(flags)
    assert "has reached --max_steps 7; raise it to train on" in capsys.readouterr().out


def test_patience_stops_training_when_dev_bleu_stops_rising(corpus, capsys):
    directory, flags = corpus
    dev = ["--source_dev", str(directory / "test.de"), "--target_dev", str(directory / "test.en")]
    flags = with_logdir(flags, directory / "patience") + dev + [
        "--num_epochs", "6", "--dev_eval", "true", "--patience", "2", "--lr", "1e-12"]  # nothing is learnt
    train.main(flags)
    out = capsys.readouterr().out
    assert "no better dev BLEU in the last 2 evaluations" in out and "--patience 2 ends training" in out
    assert tf.train.latest_checkpoint(str(directory / "patience")).endswith("model_epoch_03_gs_60")
    train.main(flags)
    assert "training stopped early: no better dev BLEU in 2 evaluations" in capsys.readouterr().out


@pytest.fixture(scope="module")
def second_model(corpus):
    """Another model on the same vocab, of another width."""
    directory, flags = corpus
    flags = with_logdir(flags, directory / "second") + ["--num_epochs", "1", "--hidden_units", "16", "--seed", "7"]
    train.main(flags)
    return directory / "second"


def test_eval_and_translate_take_an_ensemble(corpus, averaged, second_model, capsys):
    directory, _ = corpus
    evaluate.main(averaged + ["--ensemble", str(second_model), "--all"])
    out = capsys.readouterr().out
    assert re.search(r"model_epoch_02_gs_20_ens2: 12 sentences", out)
    text = (directory / "results" / "model_epoch_02_gs_20_ens2").read_text()
    got = re.findall(r"- got: (.*)\n", text)
    translate.main(averaged + ["--ensemble", str(second_model), "--input", str(directory / "test.de"),
                               "--output", str(directory / "ens.txt")])
    assert (directory / "ens.txt").read_text().splitlines() == got


def test_an_ensemble_member_on_another_vocab_is_refused(corpus, averaged, tmp_path):
    other = corpus_flags(tmp_path, toy_pairs(100, seed=9, reverse=True), toy_pairs(5, seed=2)) + ["--maxlen", "10"]
    prepro.main(other)
    train.main(other + TINY_MODEL + ["--batch_size", "16", "--num_epochs", "1"])
    with pytest.raises(UserError, match="is not the one the model in .* was trained with"):
        evaluate.main(averaged + ["--ensemble", str(tmp_path / "logdir")])


def test_scores_are_the_log_probabilities_beam_search_ranks_by(corpus, averaged, tmp_path):
    directory, _ = corpus
    german = (directory / "test.de").read_text().splitlines()[:6]
    nbest = tmp_path / "nbest.txt"
    (tmp_path / "de.txt").write_text("\n".join(german) + "\n")
    translate.main(averaged + ["--input", str(tmp_path / "de.txt"), "--output", str(nbest), "--nbest", "2",
                               "--length_penalty", "0"])
    rows = [line.split(" ||| ") for line in nbest.read_text().splitlines()]
    (tmp_path / "src.txt").write_text("".join(german[int(i)] + "\n" for i, _, _ in rows) + "\n")
    (tmp_path / "tgt.txt").write_text("".join(text + "\n" for _, text, _ in rows) + "\n")  # and a blank pair
    score.main(averaged + ["--source", str(tmp_path / "src.txt"), "--target", str(tmp_path / "tgt.txt"),
                           "--output", str(tmp_path / "scores.tsv")])
    lines = (tmp_path / "scores.tsv").read_text().split("\n")
    assert len(lines) == len(rows) + 2 and lines[-2:] == ["", ""]  # one line per pair; blank for the blank one
    assert any(text for _, text, _ in rows)
    for (_, text, beam_score), line in zip(rows, lines):
        if not text:  # an empty translation: nothing to score
            assert line == ""
            continue
        total, per_token, tokens = line.split("\t")
        assert int(tokens) == len(text.split()) + 1  # the words and </S>
        assert float(total) == pytest.approx(float(beam_score), abs=2e-3)  # no length penalty: the log-probability
        assert float(per_token) == pytest.approx(float(total) / int(tokens), abs=1e-3)


def test_score_refuses_files_of_different_lengths(corpus, averaged, tmp_path):
    (tmp_path / "a").write_text("eins\nzwei\n")
    (tmp_path / "b").write_text("one\n")
    with pytest.raises(UserError, match="has 2 sentences but .* has 1; the two files must be line-aligned"):
        score.main(averaged + ["--source", str(tmp_path / "a"), "--target", str(tmp_path / "b")])


def test_sampling_from_the_command_line_is_reproducible(averaged):
    def run(seed):
        result = subprocess.run([sys.executable, str(ROOT / "translate.py"), *averaged, "--sampling_topk", "5",
                                 "--sampling_temperature", "2.0", "--seed", str(seed), "eins zwei drei vier",
                                 "fuenf sechs sieben acht neun"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    first = run(3)
    assert len(first.splitlines()) == 2 and first == run(3)

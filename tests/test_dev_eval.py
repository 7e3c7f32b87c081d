"""dev_eval.py: the dev split scored while training, the scores in TensorBoard, the best model kept."""
import dataclasses
import json
import os

import pytest
import sacrebleu
import tensorflow as tf

import readers
import hyperparams
from cli import parse_args
from dev_eval import DevEvaluation
from inference import TensorFlowEngine, load_trained
from messages import UserError

pytestmark = pytest.mark.e2e


def logged(directory):
    """{tag: [(step, value)]} of the TensorBoard events in directory (scalars as floats, text as bytes)."""
    found = {}
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                content = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, []).append((event.step, content))
    return found


def test_dev_scores_are_logged_and_the_best_model_kept(trained_copy, tmp_path):
    directory, flags = trained_copy
    dev = ["--source_dev", str(directory / "test.de"), "--target_dev", str(directory / "test.en")]
    hp = hyperparams.for_evaluation(parse_args(flags + dev, description="")[0])
    trained = load_trained(hp)
    writer = tf.summary.create_file_writer(str(tmp_path / "events"))
    evaluation = DevEvaluation(hp, trained.model, trained.src_vocab, trained.tgt_vocab, writer, worker=0)
    bleu = evaluation(epoch=3, step=30)
    writer.flush()

    greedy = TensorFlowEngine(trained.model, trained.src_vocab, trained.tgt_vocab, dataclasses.replace(hp, beam_size=1))
    sources, references = readers.evaluation_pairs(hp, trained.src_vocab, trained.tgt_vocab, keep_all=True, split="dev")
    hypotheses = [best[0][0] for best in greedy(sources)]
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)  # greedy, every sentence
    events = logged(tmp_path / "events")
    assert {"dev_loss", "dev_acc", "dev_bleu", "dev_samples", "dev_attention"} <= set(events)
    assert events["dev_bleu"] == [(30, pytest.approx(bleu))] and 0 < events["dev_acc"][0][1] <= 1
    assert sources[0].encode() in events["dev_samples"][0][1].item()
    record = json.loads((directory / "logdir" / "best" / "best.json").read_text())
    assert record["dev_bleu"] == pytest.approx(bleu) and record["checkpoint"].endswith("model_epoch_03_gs_30")
    assert (directory / "logdir" / "best" / "model_epoch_03_gs_30.index").exists()

    assert evaluation(epoch=4, step=40) == pytest.approx(bleu)  # the same weights: not better
    record = json.loads((directory / "logdir" / "best" / "best.json").read_text())
    assert record["stale"] == 1 and record["checkpoint"].endswith("model_epoch_03_gs_30")


def test_a_dev_sentence_too_long_to_translate_is_refused_before_training(trained_copy):
    directory, flags = trained_copy
    (directory / "long.de").write_text("eins " * 300 + "\n")
    (directory / "long.en").write_text("one\n")
    dev = ["--source_dev", str(directory / "long.de"), "--target_dev", str(directory / "long.en")]
    hp = hyperparams.for_evaluation(parse_args(flags + dev, description="")[0])
    trained = load_trained(hp)
    with pytest.raises(UserError, match="sentence 1 has 301 tokens, more than the 256 a translation may have"):
        DevEvaluation(hp, trained.model, trained.src_vocab, trained.tgt_vocab, tf.summary.create_noop_writer(), 0)

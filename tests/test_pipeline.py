"""prepro -> train -> eval on a toy corpus, through the scripts' main() functions."""
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

import data_load
import eval as evaluate
import hyperparams
import prepro
import shards
import train
from cli import parse_args
from messages import UserError
from conftest import TINY_MODEL, corpus_flags, decoders_on_test_set, toy_pairs, write_lines

BATCH = ["--batch_size", "16"]


def test_vocab_file_format_and_order(tmp_path):
    src = write_lines(tmp_path / "a.de", ["Der Hund, der Hund!", "Ein Baum 3", "Der Baum und Zaun"])
    tgt = write_lines(tmp_path / "a.en", ["the dog", "a tree", "the tree"])
    prepro.main(["--source_train", src, "--target_train", tgt, "--vocab_dir", str(tmp_path / "v")])
    lines = (tmp_path / "v" / "de.vocab.tsv").read_text(encoding="utf-8").splitlines()
    specials = ["<PAD>\t1000000000", "<UNK>\t1000000000", "<S>\t1000000000", "</S>\t1000000000"]
    # by falling count, ties in code-point order; punctuation and digits refined away
    assert lines == specials + ["Baum\t2", "Der\t2", "Hund\t2", "Ein\t1", "Zaun\t1", "der\t1", "und\t1"]
    assert (tmp_path / "v" / "en.vocab.tsv").read_text().splitlines()[4:] == [
        "the\t2", "tree\t2", "a\t1", "dog\t1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for two epochs on a toy corpus: (flags, steps per epoch)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    train_pairs, test_pairs = toy_pairs(200, seed=1), toy_pairs(37, seed=2)  # 37: a partial last batch
    flags = corpus_flags(tmp, train_pairs, test_pairs) + ["--maxlen", "10"]
    prepro.main(flags)
    train.main(flags + TINY_MODEL + BATCH + ["--num_epochs", "1", "--summary_every", "5"])
    train.main(flags + TINY_MODEL + BATCH + ["--num_epochs", "2", "--summary_every", "5"])  # resumes
    return flags, 200 // 16


def test_cached_decoding_equals_full_decoding_on_a_barely_trained_model(trained):
    full, cached, beam_one = decoders_on_test_set(trained[0])  # long, rambling translations up to the limits
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_array_equal(beam_one, full)
    assert full.shape[1] > 20


def test_checkpoints_are_named_by_epoch_and_global_step(trained):
    flags, steps = trained
    logdir = flags[flags.index("--logdir") + 1]
    assert os.path.basename(tf.train.latest_checkpoint(logdir)) == f"model_epoch_02_gs_{2 * steps}"
    assert os.path.exists(os.path.join(logdir, f"model_epoch_01_gs_{steps}.index"))


def test_resume_continues_epoch_and_global_step(trained):
    flags, steps = trained
    logdir = flags[flags.index("--logdir") + 1]
    events = tf.compat.v1.train.summary_iterator  # reads the TensorBoard event files
    points = {}
    for name in os.listdir(logdir):
        if name.startswith("events.out"):
            for event in events(os.path.join(logdir, name)):
                for value in event.summary.value:
                    points.setdefault(value.tag, []).append(event.step)
    assert set(points) >= {"mean_loss", "acc", "lr"}
    assert sorted(points["mean_loss"]) == [5, 10, 12, 15, 20, 24]  # two runs, no step repeated
    assert max(points["mean_loss"]) == 2 * steps


def test_old_checkpoints_beyond_keep_are_deleted(trained, tmp_path):
    flags, steps = trained
    logdir = tmp_path / "keep1"
    train.main(flags + TINY_MODEL + BATCH + ["--logdir", str(logdir), "--num_epochs", "2",
                                            "--keep_checkpoints", "1"])
    assert sorted(p for p in os.listdir(logdir) if p.endswith(".index")) == [
        f"model_epoch_02_gs_{2 * steps}.index"]


def test_relative_logdir_is_found_again(trained, tmp_path, monkeypatch):
    flags, steps = trained
    monkeypatch.chdir(tmp_path)
    relative = ["--logdir", "runs/a", "--results_dir", "out"]
    train.main(flags + TINY_MODEL + BATCH + relative + ["--num_epochs", "1"])
    evaluate.main(flags + relative)
    assert (tmp_path / "out" / f"model_epoch_01_gs_{steps}").exists()
    os.rename(tmp_path / "runs", tmp_path / "moved")  # a moved logdir keeps working
    assert tf.train.latest_checkpoint("moved/a") == os.path.join("moved/a", f"model_epoch_01_gs_{steps}")


def test_eval_writes_the_original_results_format(trained, capsys):
    flags, steps = trained
    evaluate.main(flags)  # model settings come from logdir/hparams.json
    results = flags[flags.index("--results_dir") + 1]
    text = open(os.path.join(results, f"model_epoch_02_gs_{2 * steps}"), encoding="utf-8").read()
    blocks = text.split("\n\n")
    assert len(blocks) == 37 + 1  # every test sentence, the last partial batch too, then the score
    assert all(re.fullmatch(r"- source: [a-z ]+\n- expected: [a-z ]+\n- got: .*", b) for b in blocks[:-1])
    assert re.fullmatch(r"Bleu Score = \d+(\.\d+)?(e-?\d+)?\n", blocks[-1])
    assert "sacreBLEU" in capsys.readouterr().out
    scores = json.loads(open(os.path.join(results, f"model_epoch_02_gs_{2 * steps}.json")).read())
    assert scores["nltk_bleu"] == float(blocks[-1].split(" = ")[1])  # the results file's last line
    assert scores["sentences"] == 37 and scores["settings"]["hidden_units"] == 32
    assert scores["checkpoints"] == [os.path.join(flags[flags.index("--logdir") + 1], f"model_epoch_02_gs_{2 * steps}")]
    assert scores["sacrebleu_signature"].startswith("nrefs:1|case:mixed|")
    assert 0 <= scores["sacrebleu"] <= 100 and 0 <= scores["chrf"] <= 100


def test_eval_of_a_chosen_checkpoint_and_all_sentences(trained, tmp_path):
    flags, steps = trained
    logdir = flags[flags.index("--logdir") + 1]
    evaluate.main(flags + ["--ckpt", os.path.join(logdir, f"model_epoch_01_gs_{steps}"), "--all",
                           "--results_dir", str(tmp_path), "--batch_size", "100"])
    assert (tmp_path / f"model_epoch_01_gs_{steps}").read_text().count("- got: ") == 37


def test_eval_refuses_other_model_settings(trained):
    flags, _ = trained
    with pytest.raises(UserError, match="hidden_units: 32 != 64"):
        evaluate.main(flags + ["--hidden_units", "64"])


def test_eval_with_another_vocab_is_refused(trained, tmp_path):
    flags, _ = trained
    src = write_lines(tmp_path / "o.de", ["ganz andere Woerter hier"])
    tgt = write_lines(tmp_path / "o.en", ["quite other words here"])
    prepro.main(["--source_train", src, "--target_train", tgt, "--vocab_dir", str(tmp_path / "v")])
    # hparams.json records the vocab's sha256, so this is caught before the checkpoint is read
    with pytest.raises(UserError, match=r"the vocab in .*/v is not the one the model in .* was trained with"):
        evaluate.main(flags + ["--vocab_dir", str(tmp_path / "v")])


def test_same_seed_same_weights(trained, tmp_path):
    flags, _ = trained
    weights = []
    for run in ("a", "b"):
        logdir = tmp_path / run
        train.main(flags + TINY_MODEL + BATCH + ["--logdir", str(logdir), "--num_epochs", "1",
                                                "--dropout_rate", "0.1"])
        path = tf.train.latest_checkpoint(str(logdir))
        weights.append({n: tf.train.load_variable(path, n) for n, _ in tf.train.list_variables(path)
                        if n.startswith("model/")})
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert (weights[0][name] == weights[1][name]).all(), name


def test_settings_are_saved_with_the_model(trained):
    flags, _ = trained
    saved = json.load(open(os.path.join(flags[flags.index("--logdir") + 1], "hparams.json")))
    assert saved["hparams"]["hidden_units"] == 32 and saved["hparams"]["num_epochs"] == 2
    assert saved["command"][0] == "train.py" and saved["command"][-2:] == ["--summary_every", "5"]


def test_train_without_vocab_says_to_run_prepro(trained, tmp_path):
    flags, _ = trained
    with pytest.raises(UserError, match="de.vocab.tsv not found; run prepro.py first"):
        train.main(flags + TINY_MODEL + ["--vocab_dir", str(tmp_path / "none"), "--logdir", str(tmp_path)])


def test_eval_without_checkpoint_says_to_train(trained, tmp_path):
    flags, _ = trained
    logdir = flags[flags.index("--logdir") + 1]
    os.makedirs(tmp_path / "log")
    shutil.copy(os.path.join(logdir, "hparams.json"), tmp_path / "log")  # settings, but no checkpoint
    with pytest.raises(UserError, match="no checkpoint in .*; run train.py first"):
        evaluate.main(flags + ["--logdir", str(tmp_path / "log")])


def test_training_with_length_buckets(tmp_path):
    flags = corpus_flags(tmp_path, toy_pairs(120, seed=1), toy_pairs(10, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    train.main(flags + TINY_MODEL + ["--batch_tokens", "64", "--num_epochs", "1"])
    hp = hyperparams.Hyperparams(**parse_args(flags, description="")[0])
    lengths = shards.histogram(shards.shard_manifest(hp)["shards"])
    steps = data_load.count_batches(lengths, maxlen=hp.maxlen, batch_size=hp.batch_size, batch_tokens=64)
    assert steps > 120 // hp.batch_size  # short sentences: more, smaller batches
    assert os.path.basename(tf.train.latest_checkpoint(hp.logdir)) == f"model_epoch_01_gs_{steps}"

"""eval.py: the results file and its .json, both or neither; ensembles; the one-line errors."""
import errno
import json
import os
import re
import shutil
import warnings

import pytest

import eval as evaluate
import files
import prepro
import translate
from conftest import SESSION_STEPS, assert_one_line_error, fail_on_call, fails, run_script, snapshot, write_lines
from messages import UserError

pytestmark = pytest.mark.e2e  # every test here trains a model or starts a process


def test_eval_and_translate_take_an_ensemble(controls_corpus, averaged_model, second_model, capsys, tmp_path):
    directory, _ = controls_corpus
    averaged = averaged_model + ["--results_dir", str(tmp_path)]
    evaluate.main(averaged + ["--ensemble", str(second_model), "--all"])
    out = capsys.readouterr().out
    assert re.search(r"model_epoch_02_gs_20_ens2: 12 sentences", out)
    text = (tmp_path / "model_epoch_02_gs_20_ens2").read_text()
    got = re.findall(r"- got: (.*)\n", text)
    translate.main(averaged + ["--ensemble", str(second_model), "--input", str(directory / "test.de"),
                               "--output", str(tmp_path / "ens.txt")])
    assert (tmp_path / "ens.txt").read_text().splitlines() == got


def test_eval_writes_its_results_and_their_json_both_or_neither(trained_copy, capsys, monkeypatch):
    directory, flags = trained_copy
    evaluate.main(flags)
    results = directory / "results"
    before = snapshot(results)
    assert len(before) == 2  # the results file and its .json
    fail_on_call(monkeypatch, files.os, "fsync", 2, OSError(errno.ENOSPC, "No space left on device"))
    line = fails(evaluate.main, "eval.py", flags, capsys, monkeypatch, after_work=True)
    assert ".json (No space left on device)" in line
    assert snapshot(results) == before


def test_eval_writes_the_original_results_format(trained_model, capsys, tmp_path):
    _, flags = trained_model
    steps = SESSION_STEPS
    evaluate.main(flags + ["--results_dir", str(tmp_path)])  # model settings come from logdir/hparams.json
    results = str(tmp_path)
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


def test_eval_of_a_chosen_checkpoint_and_all_sentences(trained_model, tmp_path):
    _, flags = trained_model
    steps = SESSION_STEPS
    logdir = flags[flags.index("--logdir") + 1]
    evaluate.main(flags + ["--ckpt", os.path.join(logdir, f"model_epoch_01_gs_{steps}"), "--all",
                           "--results_dir", str(tmp_path), "--batch_size", "100"])
    assert (tmp_path / f"model_epoch_01_gs_{steps}").read_text().count("- got: ") == 37


def test_eval_refuses_other_model_settings(trained_model):
    _, flags = trained_model
    with pytest.raises(UserError, match="hidden_units: 32 != 64"):
        evaluate.main(flags + ["--hidden_units", "64"])


def test_eval_with_another_vocab_is_refused(trained_model, tmp_path):
    _, flags = trained_model
    src = write_lines(tmp_path / "o.de", ["ganz andere Woerter hier"])
    tgt = write_lines(tmp_path / "o.en", ["quite other words here"])
    prepro.main(["--source_train", src, "--target_train", tgt, "--vocab_dir", str(tmp_path / "v")])
    # hparams.json records the vocab's sha256, so this is caught before the checkpoint is read
    with pytest.raises(UserError, match=r"the vocab in .*/v is not the one the model in .* was trained with"):
        evaluate.main(flags + ["--vocab_dir", str(tmp_path / "v")])


def test_eval_without_checkpoint_says_to_train(trained_model, tmp_path):
    _, flags = trained_model
    logdir = flags[flags.index("--logdir") + 1]
    os.makedirs(tmp_path / "log")
    shutil.copy(os.path.join(logdir, "hparams.json"), tmp_path / "log")  # settings, but no checkpoint
    with pytest.raises(UserError, match="no checkpoint in .*; run train.py first"):
        evaluate.main(flags + ["--logdir", str(tmp_path / "log")])


def test_eval_before_training(tmp_path):
    result = run_script("eval.py", "--logdir", tmp_path / "logdir", cwd=tmp_path)
    assert_one_line_error(result, "run train.py first")
    assert not (tmp_path / "results").exists()


def test_a_weak_model_s_score_is_no_warning(trained_model, tmp_path):
    _, flags = trained_model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate.main(flags + ["--results_dir", str(tmp_path)])
    assert not [w for w in caught if "n-gram" in str(w.message)]  # nltk's zero overlaps: the score, not a problem


def test_results_of_another_test_file_name_it(trained_model, tmp_path):
    directory, flags = trained_model
    source, target = directory / "test.de", directory / "test.en"
    evaluate.main(flags + ["--source_test", str(source), "--target_test", str(target), "--results_dir",
                           str(tmp_path)])
    scores = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert scores["test"] == {"split": None, "source": str(source), "target": str(target)}
    assert scores["settings"]["test_split"] == ""

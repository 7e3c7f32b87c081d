"""CTranslate2 exports (ct2.py, export.py --format ctranslate2): the same model as ours, token for token.

Two tiny trained models cover every variant the export must map: a word vocab with post-norm blocks,
sinusoid positions, separate embeddings and a moving average of the weights (exported averaged and
raw); a subword vocab with pre-norm blocks, learned positions and shared embeddings, trained with dev
evaluation (its best checkpoint) for two epochs (their average).
"""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import engine
import engines
import export
import prepro
import train
import vocab
from cli import parse_args
from conftest import ROOT, TINY_MODEL, corpus_flags, toy_pairs, write_lines
from messages import UserError

pytestmark = pytest.mark.e2e

VARIANTS = {
    "post_sinusoid_separate": ["--maxlen", "10", "--ema_decay", "0.9", "--num_epochs", "2"],
    "pre_learned_shared": ["--vocab_type", "subword", "--vocab_size", "40", "--maxlen", "40", "--norm_position", "pre",
                           "--sinusoid", "false", "--share_embeddings", "true", "--dev_eval", "true",
                           "--num_epochs", "2", "--keep_checkpoints", "5"],
}
CHOICES = {"post_sinusoid_separate": [[], ["--raw_weights"]],
           "pre_learned_shared": [[], ["--best"], ["--average_checkpoints", "2"]]}


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request, tmp_path_factory):
    """A tiny model of one variant: (its directory, its flags, the test sentences (German, English))."""
    directory = tmp_path_factory.mktemp(request.param)
    pairs = toy_pairs(600, seed=1, reverse=True)
    test = toy_pairs(12, seed=2, reverse=True) + [("Eins, zwei; DREI!", "One, two; THREE!")]
    flags = corpus_flags(directory, pairs, test) + VARIANTS[request.param] + [
        "--source_dev", write_lines(directory / "dev.de", [s for s, _ in test[:6]]),
        "--target_dev", write_lines(directory / "dev.en", [t for _, t in test[:6]])]
    prepro.main(flags)
    train.main(flags + TINY_MODEL + ["--batch_size", "16", "--lr", "0.003"])
    return directory, flags, request.param, test


def engines_for(flags, choice, out, quantization="float32", nbest=1, **decoding):
    """(our engine, the CTranslate2 engine of the export of the same weights), with these decoding settings."""
    export.main(flags + choice + ["--out", str(out), "--format", "ctranslate2", "--quantization", quantization])
    explicit, args = parse_args(flags + choice, description="", add_arguments=engines.add_model_flags)
    explicit = {**explicit, **decoding}
    ours = engines.open_engine(engines.settings(explicit, args), args, nbest)
    _, exported = parse_args(["--ct2", str(out)], description="", add_arguments=engines.add_model_flags)
    return ours, engines.open_engine(engines.settings(decoding, exported), exported, nbest)


def test_log_probabilities_and_greedy_translations_are_ours(trained, tmp_path):
    _, flags, variant, test = trained
    german, english = [s for s, _ in test], [t for _, t in test]
    for i, choice in enumerate(CHOICES[variant]):
        ours, theirs = engines_for(flags, choice, tmp_path / f"ct2_{i}")
        assert ours.checkpoints == theirs.checkpoints and ours.vocab_sha256 == theirs.vocab_sha256
        src = engine.encode(ours.src_vocab, [ours.src_vocab.clean(s) for s in german], ours.hp)
        tgt = engine.encode(ours.tgt_vocab, [ours.tgt_vocab.clean(t) for t in english], ours.hp, target=True)
        for a, b in zip(ours.token_log_probs(src, tgt), theirs.token_log_probs(src, tgt)):
            np.testing.assert_allclose(a, b, atol=1e-4)  # every target token, </S> included
        for (total, tokens), (other, count) in zip(ours.score(german, english), theirs.score(german, english)):
            assert tokens == count and total == pytest.approx(other, abs=1e-4 * tokens)
        mine = [[int(i) for i in ids if i != vocab.PAD] for [(ids, _)] in ours.nbest_ids(src)]
        assert mine == [list(ids) for [(ids, _)] in theirs.nbest_ids(src)]  # greedy: token for token
        assert [h[0][0] for h in ours(german)] == [h[0][0] for h in theirs(german)]


def test_beam_search_nbest_lists_agree(trained, tmp_path):
    _, flags, _, test = trained
    german = [s for s, _ in test]
    for alpha in (0.0, 1.0):
        ours, theirs = engines_for(flags, [], tmp_path / f"beam_{alpha}", nbest=4, beam_size=4, length_penalty=alpha)
        for mine, other in zip(ours(german), theirs(german)):
            assert [text for text, _ in mine] == [text for text, _ in other]  # the same list, in the same order
            np.testing.assert_allclose([s for _, s in mine], [s for _, s in other], atol=1e-4)


def test_an_int8_export_loads_and_translates(trained, tmp_path):
    _, flags, _, test = trained
    ours, theirs = engines_for(flags, [], tmp_path / "int8", quantization="int8")
    translations = theirs([s for s, _ in test] + [""])
    assert len(translations) == len(test) + 1 and translations[-1][0][0] == ""
    same = sum(a[0][0] == b[0][0] for a, b in zip(ours([s for s, _ in test]), translations))
    assert same >= len(test) // 2  # 8-bit weights: mostly the same translations
    assert theirs.name.endswith("_ct2_int8")


def run_script(name, *argv, extra=()):
    return subprocess.run([sys.executable, *extra, str(ROOT / name), *argv], capture_output=True, text=True,
                          timeout=300)


def test_scripts_given_ct2_do_not_import_tensorflow_and_match_ours(trained, tmp_path):
    directory, flags, _, test = trained
    out = tmp_path / "exported"
    export.main(flags + ["--out", str(out), "--format", "ctranslate2"])
    german = directory / "test.de"
    ours = run_script("translate.py", *flags, "--input", str(german))
    theirs = run_script("translate.py", "--ct2", str(out), "--input", str(german), extra=["-X", "importtime"])
    assert ours.returncode == 0 and theirs.returncode == 0, theirs.stderr[-2000:]
    assert theirs.stdout == ours.stdout
    assert "tensorflow" not in theirs.stderr  # -X importtime lists every module imported
    result = run_script("eval.py", "--ct2", str(out), "--all", "--results_dir", str(tmp_path / "results"),
                        extra=["-X", "importtime"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tensorflow" not in result.stderr
    written = sorted(os.listdir(tmp_path / "results"))
    assert len(written) == 2 and all("_ct2_float32" in name for name in written)  # never the TF engine's name
    scores = json.loads((tmp_path / "results" / [n for n in written if n.endswith(".json")][0]).read_text())
    assert scores["sentences"] == len(test) and scores["test"]["source"] == str(german)
    result = run_script("score.py", "--ct2", str(out), "--source", str(german), "--target", str(directory / "test.en"))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == len(test)


def damage(out, how):
    """Breaks an export in one of the ways a user might; returns what the error must name."""
    marker = out / "export.json"
    if how == "no_marker":
        marker.unlink()
        return "holds no export.json"
    if how == "savedmodel_marker":
        record = json.loads(marker.read_text())
        marker.write_text(json.dumps({**record, "format": "savedmodel"}))
        return "does not describe a CTranslate2 export"
    if how == "not_json":
        marker.write_text("{")
        return "export.json is damaged"
    if how == "tokenizer_changed":
        name = next(n for n in json.loads(marker.read_text())["tokenizer"])
        (out / name).write_bytes((out / name).read_bytes() + b" ")
        return f"{name} is missing or is not the file"
    if how == "vocab_type_edited":
        record = json.loads(marker.read_text())
        record["settings"]["vocab_type"] = "subword" if record["settings"]["vocab_type"] == "word" else "word"
        marker.write_text(json.dumps(record))
        return "export.json says the model has a"
    if how == "model_truncated":
        model = (out / "model.bin").read_bytes()
        (out / "model.bin").write_bytes(model[:len(model) // 2])
        return "model.bin is missing or is not the file"
    if how == "model_of_another_export":  # same size, other weights
        model = bytearray((out / "model.bin").read_bytes())
        model[-100:] = bytes(100)
        (out / "model.bin").write_bytes(bytes(model))
        return "model.bin is missing or is not the file"
    (out / "model.bin").unlink()
    return "model.bin is missing"


@pytest.mark.parametrize("how", ["no_marker", "savedmodel_marker", "not_json", "tokenizer_changed", "no_model",
                                 "model_truncated", "model_of_another_export", "vocab_type_edited"])
def test_a_damaged_or_foreign_export_is_refused_in_one_line(trained, tmp_path, how):
    directory, flags, variant, _ = trained
    if variant != "post_sinusoid_separate":
        pytest.skip("one variant is enough")
    out = tmp_path / "exported"
    export.main(flags + ["--out", str(out), "--format", "ctranslate2"])
    words = damage(out, how)
    result = run_script("translate.py", "--ct2", str(out), "eins zwei")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()] and words in result.stderr
    with pytest.raises(UserError, match="choose among the checkpoints in --logdir"):
        engines.settings({}, parse_args(["--ct2", str(out), "--best"], description="",
                                        add_arguments=lambda p: engines.add_model_flags(p))[1])
    shutil.rmtree(out)


def test_the_readme_s_lines_translate_with_ctranslate2_and_sentencepiece_alone(trained, tmp_path):
    _, flags, variant, _ = trained
    if variant != "pre_learned_shared":
        pytest.skip("the README's lines are for a subword model")
    export.main(flags + ["--out", str(tmp_path / "exported_ct2"), "--format", "ctranslate2"])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [example] = [b for b in re.findall(r"^```python\n(.*?)^```", readme, re.M | re.S) if "ctranslate2" in b]
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", example], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 2 and all(result.stdout.splitlines())
    assert not re.search(r"\| (tensorflow|transformer|engines|ct2)\b", result.stderr)  # those two packages alone

"""The scripts as users run them: bad input gives one line on stderr, exit code 2, no output file."""
import dataclasses
import subprocess
import sys

import pytest

import hyperparams
from conftest import ROOT, write_lines
from hyperparams import Hyperparams


def run(script, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.startswith(("prepro.py", "train.py", "eval.py"))]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_flag(tmp_path):
    result = run("train.py", "--hidden_unit", "8", cwd=tmp_path)
    assert_one_line_error(result, "unrecognized arguments: --hidden_unit")


def test_missing_corpus_leaves_no_vocab(tmp_path):
    result = run("prepro.py", cwd=tmp_path)  # the default IWSLT paths do not exist here
    assert_one_line_error(result, "corpora/train.tags.de-en.de not found", "download.py", "--source_train")
    assert not (tmp_path / "preprocessed").exists()


@pytest.mark.parametrize("suffix, source_lines, target_lines, message", [
    ("", ["eins", "zwei", "drei"], ["one", "two"], "has 3 lines but"),
    ("", ["eins", "zwei", "drei"], [], "has 3 lines but"),
    ("", [], [], "hold no sentence pairs"),
    (".xml", ['<seg id="1"> eins </seg>', '<seg id="2"> zwei'], ['<seg id="1"> one </seg>'] * 2,
     "a.de.xml:2: malformed <seg> line"),
], ids=["short", "empty-target", "both-empty", "malformed-xml"])
def test_broken_corpus(tmp_path, suffix, source_lines, target_lines, message):
    src = write_lines(tmp_path / f"a.de{suffix}", source_lines)
    tgt = write_lines(tmp_path / f"a.en{suffix}", target_lines)
    result = run("prepro.py", "--source_train", src, "--target_train", tgt, cwd=tmp_path)
    assert_one_line_error(result, message, "a.de")
    assert not (tmp_path / "preprocessed").exists()


def test_corpus_not_in_utf8(tmp_path):
    (tmp_path / "a.de").write_bytes("eins\nGr\u00fc\u00dfe\n".encode("latin-1"))
    tgt = write_lines(tmp_path / "a.en", ["one", "greetings"])
    result = run("prepro.py", "--source_train", tmp_path / "a.de", "--target_train", tgt, cwd=tmp_path)
    assert_one_line_error(result, f"{tmp_path / 'a.de'}:2: not valid UTF-8", "iconv")
    assert not (tmp_path / "preprocessed").exists()


def test_eval_before_training(tmp_path):
    result = run("eval.py", "--logdir", tmp_path / "logdir", cwd=tmp_path)
    assert_one_line_error(result, "run train.py first")
    assert not (tmp_path / "results").exists()


def test_the_reference_lists_every_setting():
    table = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    missing = [f.name for f in dataclasses.fields(Hyperparams)
               if f"| `{f.name}`" not in table and f", `{f.name}`" not in table]  # a row's first or later name
    assert not missing


@pytest.mark.parametrize("script, flag", [("train.py", "logdir"), ("eval.py", "results_dir"),
                                          ("prepro.py", "vocab_dir")])
def test_unwritable_output_directory_is_refused_before_any_work(tmp_path, script, flag):
    (tmp_path / "a_file").write_text("not a directory")
    corpus = [write_lines(tmp_path / "t.de", ["eins zwei"]), write_lines(tmp_path / "t.en", ["one two"])]
    hyperparams.save(Hyperparams(logdir=str(tmp_path / "logdir")))  # eval.py first reads a model's settings
    logdir = [] if flag == "logdir" else ["--logdir", tmp_path / "logdir"]
    result = run(script, f"--{flag}", tmp_path / "a_file" / "out", "--source_train", corpus[0],
                 "--target_train", corpus[1], *logdir, cwd=tmp_path)
    assert_one_line_error(result, f"cannot write to --{flag} {tmp_path / 'a_file' / 'out'}")


def test_resuming_with_another_shape_corpus_or_vocab_is_refused(tmp_path):
    import prepro
    import train
    from conftest import TINY_MODEL, corpus_flags, toy_pairs
    first = corpus_flags(tmp_path / "a", toy_pairs(40, seed=1), toy_pairs(4, seed=2))
    shared = ["--vocab_dir", str(tmp_path / "vocab"), "--logdir", str(tmp_path / "logdir")]
    prepro.main(first + shared)
    train.main(first + shared + TINY_MODEL + ["--batch_size", "8", "--num_epochs", "1"])

    wider = [v if v != "32" else "64" for v in TINY_MODEL]  # --hidden_units 64
    result = run("train.py", *first, *shared, *wider, "--batch_size", "8", "--num_epochs", "2", cwd=tmp_path)
    assert_one_line_error(result, "holds a model trained with other settings (hidden_units: 32 != 64)")

    second = corpus_flags(tmp_path / "b", toy_pairs(40, seed=3), toy_pairs(4, seed=2)) + shared
    result = run("train.py", *second, *TINY_MODEL, "--batch_size", "8", cwd=tmp_path)
    assert_one_line_error(result, f"the vocab in {tmp_path / 'vocab'} was built from {tmp_path / 'a' / 'train.de'}",
                          "run prepro.py with these settings")

    prepro.main(second)  # rebuilt from the second corpus, while logdir holds a model of the first vocab
    result = run("train.py", *second, *TINY_MODEL, "--batch_size", "8", "--num_epochs", "2", cwd=tmp_path)
    assert_one_line_error(result, "is not the one the model in", "(it was rebuilt since)")

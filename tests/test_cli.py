"""The scripts as users run them: bad input gives one line on stderr, exit code 2, no output file."""
import dataclasses
import re
import signal
import subprocess
import sys
import time

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


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.5])
def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path, delay):
    """SIGINT at moments that land in the interpreter's start, in TensorFlow's import and after it."""
    process = subprocess.Popen([sys.executable, str(ROOT / "eval.py"), "--logdir", str(tmp_path / "none")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if process.returncode == 2:  # it had already ended on its own, with its one line
        assert err.splitlines() == [err.strip()] and "run train.py first" in err
        return
    assert process.returncode == 130, err
    assert err.strip() == "eval.py: interrupted" and out == ""


def test_train_py_interrupted_while_importing_tensorflow(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--logdir", str(tmp_path / "log")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # TensorFlow takes seconds to import
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip() == "train.py: interrupted", err
    assert not (tmp_path / "log").exists()


def test_help_lists_the_settings_a_script_reads(tmp_path):
    shown = {}
    for script in ("prepro.py", "train.py", "eval.py", "translate.py", "score.py", "export.py", "serve.py"):
        result = run(script, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        shown[script] = set(re.findall(r"--(\w+)", result.stdout))
    assert "lr" in shown["train.py"] and not {"lr", "adam_beta1", "num_epochs"} & shown["eval.py"]
    assert {"beam_size", "results_dir", "test_split", "ct2", "all"} <= shown["eval.py"]
    assert {"vocab_size", "min_cnt"} <= shown["prepro.py"] and "hidden_units" not in shown["prepro.py"]
    assert {"max_batch_tokens", "max_queue", "ct2", "host", "port"} <= shown["serve.py"]
    assert {"format", "quantization", "overwrite"} <= shown["export.py"] and "results_dir" not in shown["export.py"]


def test_a_flag_hidden_from_help_is_still_accepted_where_it_must_match(trained_model, tmp_path):
    """The Makefile passes one command line to every script: eval.py takes the model's flags, if they match."""
    _, flags = trained_model
    result = run("eval.py", *flags, "--hidden_units", "32", "--results_dir", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run("eval.py", *flags, "--hidden_units", "64", cwd=tmp_path)
    assert result.returncode == 2 and "hidden_units: 32 != 64" in result.stderr


def test_notes_go_to_stderr_and_a_full_stdout_is_one_line(trained_model, tmp_path):
    _, flags = trained_model
    result = run("translate.py", *flags, "--raw_weights", "eins zwei", "drei", cwd=tmp_path)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2  # two lines in, two out
    assert result.stderr.startswith("note: --raw_weights changes nothing")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, str(ROOT / "translate.py"), *flags, "eins zwei"], cwd=tmp_path,
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["translate.py: error: cannot write the results to stdout (No space left "
                                          "on device); free some space or redirect them elsewhere"]

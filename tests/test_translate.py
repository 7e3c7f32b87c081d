"""translate.py: arguments, stdin and files give the translations eval.py gives, line for line."""
import re
import subprocess
import sys

import pytest

import engines
import eval as evaluate
import prepro
import train
import translate
from messages import UserError
from conftest import ROOT, TINY_MODEL, corpus_flags, toy_pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for two epochs, and eval.py's translations of its test set."""
    directory = tmp_path_factory.mktemp("translate")
    flags = corpus_flags(directory, toy_pairs(400, seed=1), toy_pairs(20, seed=2)) + ["--maxlen", "10"]
    prepro.main(flags)
    train.main(flags + TINY_MODEL + ["--batch_size", "16", "--num_epochs", "2"])
    evaluate.main(flags + ["--all"])
    results = next(p for p in (directory / "results").iterdir() if p.suffix != ".json").read_text()
    return directory, flags, re.findall(r"- got: (.*)\n", results)


def script(*argv, stdin=""):
    return subprocess.run([sys.executable, str(ROOT / "translate.py"), *argv], input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_a_file_translates_as_eval_does(trained, tmp_path):
    directory, flags, got = trained
    out = tmp_path / "en.txt"
    translate.main(flags + ["--input", str(directory / "test.de"), "--output", str(out)])
    assert out.read_text(encoding="utf-8").splitlines() == got


def test_arguments_and_stdin(trained):
    directory, flags, got = trained
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()
    result = script(*flags, german[0], german[1].upper() + " !")  # refined as the training text was
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [got[0], translate_refined(flags, german[1].upper())]
    result = script(*flags, "--batch_size", "2", stdin="\n".join([german[0], "", *german[1:5]]) + "\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [got[0], "", *got[1:5]]  # an empty line stays in its place


def translate_refined(flags, sentence):
    """The in-process translation of one sentence, for comparison."""
    import hyperparams
    from cli import parse_args
    hp = hyperparams.for_evaluation(parse_args(flags, description="")[0])
    return engines.open_engine(hp)([sentence])[0][0][0]


def test_nbest_lists_the_best_hypotheses_first(trained, capsys):
    directory, flags, _ = trained
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()[:2]
    translate.main(flags + ["--beam_size", "3", "--nbest", "3", *german])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ||| ")[0] for line in lines] == ["0"] * 3 + ["1"] * 3
    for first in (0, 3):
        scores = [float(line.split(" ||| ")[2]) for line in lines[first:first + 3]]
        assert scores == sorted(scores, reverse=True)
    translate.main(flags + ["--beam_size", "3", *german])
    assert capsys.readouterr().out.splitlines() == [lines[0].split(" ||| ")[1], lines[3].split(" ||| ")[1]]


def test_bad_requests_are_one_line_errors(trained, tmp_path):
    _, flags, _ = trained
    with pytest.raises(UserError, match="--output needs --input FILE"):
        translate.main(flags + ["--output", str(tmp_path / "x")])
    with pytest.raises(UserError, match="missing.txt not found; pass an existing file to --input"):
        translate.main(flags + ["--input", str(tmp_path / "missing.txt")])
    assert not (tmp_path / "x").exists()
    german = tmp_path / "de.txt"
    german.write_text("eins zwei\n")
    with pytest.raises(UserError, match="--output is the --input file"):
        translate.main(flags + ["--input", str(german), "--output", str(tmp_path / "." / "de.txt")])
    assert german.read_text() == "eins zwei\n"


def test_stdin_that_is_not_utf8_is_a_one_line_error(trained):
    _, flags, _ = trained
    result = subprocess.run([sys.executable, str(ROOT / "translate.py"), *flags], input=b"eins zwei\nGr\xfc\xdfe\n",
                            capture_output=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "translate.py: error: <stdin>:2: not valid UTF-8 (byte 2 of the line); convert the text to UTF-8, "
        "e.g. with iconv"]


LOAD_AND_TRANSLATE = """
import sys
import tensorflow as tf
if sys.argv[2] == "subword":
    import tensorflow_text  # registers the SentencePiece ops
translate = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
lines = sys.stdin.read().split("\\n")[:-1]
for text in translate(tf.constant(lines))["translations"].numpy():
    print(text.decode("utf-8"))
"""


def exported_translations(directory, lines, vocab_type):
    """The SavedModel in `directory`, loaded in a fresh process with only TensorFlow: lines -> translations."""
    result = subprocess.run([sys.executable, "-c", LOAD_AND_TRANSLATE, str(directory), vocab_type],
                            input="".join(f"{line}\n" for line in lines), capture_output=True, text=True,
                            timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_the_exported_model_translates_strings_as_eval_does(trained, tmp_path):
    import export
    directory, flags, got = trained
    export.main(flags + ["--out", str(tmp_path / "saved")])
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()
    assert exported_translations(tmp_path / "saved", german + [""], "word") == got + [""]


def png_size(path):
    """(width, height) from a PNG file's header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_plot_attention_draws_a_grid_of_every_kind_layer_and_head(trained, tmp_path):
    import plot_attention
    directory, flags, _ = trained
    sentence = (directory / "test.de").read_text(encoding="utf-8").splitlines()[0]
    plot_attention.main(flags + ["--out", str(tmp_path / "all.png"), sentence])
    assert png_size(tmp_path / "all.png") == (2 * 300, 3 * 300)  # 2 heads x (3 kinds x 1 layer)
    plot_attention.main(flags + ["--out", str(tmp_path / "one.png"), "--head", "1", sentence])
    assert png_size(tmp_path / "one.png") == (300, 3 * 300)
    with pytest.raises(UserError, match="--head 2 does not exist; this model has 2 \\(0 to 1\\)"):
        plot_attention.main(flags + ["--out", str(tmp_path / "bad.png"), "--head", "2", sentence])
    assert not (tmp_path / "bad.png").exists()

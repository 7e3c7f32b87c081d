"""translate.py: arguments, stdin and files give the translations eval.py gives, line for line."""
import io
import subprocess
import sys
import time

import pytest

import engines
import score
import translate
from conftest import ROOT, fails, write_lines
from messages import UserError

pytestmark = pytest.mark.e2e  # every test here trains a model or starts a process


@pytest.fixture(scope="module")
def trained(trained_model, session_translations):
    """The session's model, and eval.py's translations of its test set: (directory, flags, translations)."""
    return (*trained_model, session_translations)


def test_a_file_translates_as_eval_does(trained, tmp_path):
    directory, flags, got = trained
    out = tmp_path / "en.txt"
    translate.main(flags + ["--input", str(directory / "test.de"), "--output", str(out)])
    assert out.read_text(encoding="utf-8").splitlines() == got


def test_arguments_and_stdin(trained, capsys, monkeypatch):
    directory, flags, got = trained
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()
    capsys.readouterr()
    translate.main([*flags, german[0], german[1].upper() + " !"])  # refined as the training text was
    assert capsys.readouterr().out.splitlines() == [got[0], translate_refined(flags, german[1].upper())]
    stdin = "\n".join([german[0], "", *german[1:5]]) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
    translate.main([*flags, "--batch_size", "2"])
    assert capsys.readouterr().out.splitlines() == [got[0], "", *got[1:5]]  # an empty line stays in its place


def test_an_argument_that_is_not_utf8_is_one_line(trained):
    _, flags, _ = trained
    result = subprocess.run([sys.executable, str(ROOT / "translate.py"), *flags, "eins", b"Hund \xff\xfe Katze"],
                            capture_output=True, timeout=300)
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode().splitlines()[-1] == ("translate.py: error: argument 2 is not valid UTF-8 (a lone "
                                                       "surrogate, U+DCFF, at character 6); pass UTF-8 text")


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


def test_stdin_that_is_not_utf8_is_a_one_line_error(trained, capsys, monkeypatch):
    _, flags, _ = trained
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"eins zwei\nGr\xfc\xdfe\n")))
    line = fails(translate.main, "translate.py", flags, capsys, monkeypatch, after_work=True)
    assert line == ("translate.py: error: <stdin>:2: not valid UTF-8 (byte 2 of the line); convert the text to "
                    "UTF-8, e.g. with iconv")


def test_sampling_from_the_command_line_is_reproducible(averaged_model):
    averaged = averaged_model
    def run(seed):
        result = subprocess.run([sys.executable, str(ROOT / "translate.py"), *averaged, "--sampling_topk", "5",
                                 "--sampling_temperature", "2.0", "--seed", str(seed), "eins zwei drei vier",
                                 "fuenf sechs sieben acht neun"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    first = run(3)
    assert len(first.splitlines()) == 2 and first == run(3)


def test_a_line_too_long_to_translate_is_refused_before_any_tensor_is_made(trained, tmp_path, capsys,
                                                                             monkeypatch):
    directory, flags, _ = trained
    stdin = "eins zwei\n" + "drei " * 100000 + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
    start = time.perf_counter()
    line = fails(translate.main, "translate.py", flags, capsys, monkeypatch)
    assert time.perf_counter() - start < 60  # (before: 38 s and a tensor of 100,008 x 100,008 per head)
    assert line == ("translate.py: error: line 2 has 100,001 tokens, more than the 256 a translation may have "
                    "(--decode_maxlen); split it into sentences, or raise --decode_maxlen")
    long = ["--source", write_lines(tmp_path / "long.de", ["eins"]), "--target",
            write_lines(tmp_path / "long.en", ["one " * 299])]
    with pytest.raises(UserError, match="line 1 has 300 tokens, more than the 256"):
        score.main(flags + long)


def test_split_sentences_translates_each_sentence_of_a_line_and_names_the_line_of_one_too_long(trained, tmp_path,
                                                                                            capsys, monkeypatch):
    directory, flags, _ = trained
    german = [g.capitalize() for g in (directory / "test.de").read_text(encoding="utf-8").splitlines()[:2]]
    capsys.readouterr()
    translate.main([*flags, *german])
    alone = capsys.readouterr().out.splitlines()
    source = write_lines(tmp_path / "paragraphs.de", [f"{german[0]}.  {german[1]}!", "", german[1]])
    translate.main([*flags, "--split_sentences", "--input", source, "--output", str(tmp_path / "out.en")])
    assert (tmp_path / "out.en").read_text(encoding="utf-8").splitlines() == [f"{alone[0]}  {alone[1]}", "",
                                                                              alone[1]]  # the line's own spacing
    stdin = f"Eins.\nEins. Zwei {'zwei ' * 300}\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8"))
    line = fails(translate.main, "translate.py", [*flags, "--split_sentences"], capsys, monkeypatch)
    assert line.startswith("translate.py: error: line 2 has 302 tokens, more than the 256")


def test_a_relative_vocab_dir_recorded_by_training_is_named_when_run_from_elsewhere(trained_copy, tmp_path,
                                                                                     capsys, monkeypatch):
    import json

    directory, flags = trained_copy
    record = json.loads((directory / "logdir" / "hparams.json").read_text(encoding="utf-8"))
    record["hparams"]["vocab_dir"] = "vocab"  # as train.py records a --vocab_dir given relative to where it ran
    (directory / "logdir" / "hparams.json").write_text(json.dumps(record), encoding="utf-8")
    logdir = ["--logdir", str(directory / "logdir")]
    monkeypatch.chdir(tmp_path)
    line = fails(translate.main, "translate.py", [*logdir, "eins zwei"], capsys, monkeypatch)
    assert line == (f"translate.py: error: --vocab_dir vocab, which {directory / 'logdir' / 'hparams.json'} records, "
                    "is not here: it is relative to the directory train.py ran in; run from there, or pass "
                    "--vocab_dir with its path")
    monkeypatch.chdir(directory)  # from there it translates
    translate.main([*logdir, "eins zwei"])
    assert capsys.readouterr().out.strip()

"""export.py: the SavedModel translates strings as translate.py does; what --out and --overwrite never lose."""
import json
import os
import subprocess
import sys

import pytest

import ct2
import export
from conftest import fails, flag, snapshot

pytestmark = pytest.mark.e2e  # every test here trains a model or starts a process


@pytest.mark.parametrize("out", ["logdir", "vocab_dir", ".", "parent", "full", "file"])
def test_export_never_replaces_what_it_did_not_write(trained_copy, out, capsys, monkeypatch):
    directory, flags = trained_copy
    monkeypatch.chdir(directory)
    (directory / "full").mkdir(exist_ok=True)
    (directory / "full" / "notes.txt").write_text("mine")
    (directory / "file").write_text("mine")
    target = {"logdir": flag(flags, "logdir"), "vocab_dir": flag(flags, "vocab_dir"), ".": ".",
              "parent": str(directory.parent), "full": "full", "file": "file"}[out]
    before = snapshot(directory)
    for overwrite in ([], ["--overwrite"]):  # --overwrite changes nothing here: none is export.py's
        line = fails(export.main, "export.py", flags + ["--out", target, *overwrite], capsys, monkeypatch)
        assert f"--out {target}" in line or f"{target} is not one" in line
    assert snapshot(directory) == before


def test_export_overwrite_replaces_only_its_own_savedmodel(trained_model, tmp_path, capsys, monkeypatch):
    _, flags = trained_model
    out = tmp_path / "exports" / "exported"  # inside a directory that does not exist yet
    export.main(flags + ["--out", str(out)])
    marker = json.loads((out / ct2.MARKER).read_text())
    assert marker["written_by"] == "export.py" and marker["name"].startswith("model_epoch_02")
    first = snapshot(out)
    line = fails(export.main, "export.py", flags + ["--out", out], capsys, monkeypatch)
    assert "exists and is not empty" in line and "--overwrite" in line
    assert snapshot(out) == first
    export.main(flags + ["--out", str(out), "--overwrite"])
    assert (out / ct2.MARKER).is_file() and (out / "saved_model.pb").is_file()
    assert sorted(os.listdir(out.parent)) == ["exported"]  # no temporary or old directory is left


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


def test_the_exported_model_translates_strings_as_eval_does(trained_model, session_translations, tmp_path):
    directory, flags = trained_model
    got = session_translations
    export.main(flags + ["--out", str(tmp_path / "saved")])
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()
    assert exported_translations(tmp_path / "saved", german + [""], "word") == got + [""]


def test_the_savedmodel_refuses_a_sentence_too_long_to_translate(trained_model, tmp_path):
    _, flags = trained_model
    export.main(flags + ["--out", str(tmp_path / "saved"), "--decode_maxlen", "20"])
    code = ("import sys, tensorflow as tf\n"
            "translate = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
            "try:\n    translate(tf.constant(['eins ' * 30]))\n"
            "except tf.errors.InvalidArgumentError as e:\n    print(e.message)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "saved")], capture_output=True, text=True,
                            timeout=300, cwd="/")
    assert "a sentence has more than the 20 tokens a translation may have" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("marker", ["", '{"written_by": "someone"}', "user file"])
def test_overwrite_checks_export_json_and_what_the_directory_holds(trained_model, tmp_path, capsys, monkeypatch,
                                                                   marker):
    _, flags = trained_model
    out = tmp_path / "out"
    if marker == "user file":
        export.main(flags + ["--out", str(out), "--format", "ctranslate2"])
        (out / "notes.txt").write_text("mine")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        (out / "export.json").write_text(marker)
    before = snapshot(out)
    line = fails(export.main, "export.py", flags + ["--out", out, "--overwrite"], capsys, monkeypatch)
    assert str(out) in line and ("did not write (notes.txt)" in line or "is damaged" in line
                                       or "holds no export.json written by export.py" in line)
    assert snapshot(out) == before


def test_a_killed_overwrite_puts_the_previous_export_back(trained_model, tmp_path):
    _, flags = trained_model
    out = tmp_path / "out"
    export.main(flags + ["--out", str(out), "--format", "ctranslate2"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    moved = tmp_path / f"out.old.tmp{dead.stdout.strip()}"
    half = tmp_path / f"out.tmp{dead.stdout.strip()}"
    out.rename(moved)  # killed between moving the old export aside and renaming the new one
    half.mkdir()
    export.main(flags + ["--out", str(tmp_path / "other"), "--format", "ctranslate2"])  # another --out: not it
    assert moved.exists()
    export.main(flags + ["--out", str(out), "--format", "ctranslate2", "--overwrite"])
    assert sorted(os.listdir(tmp_path)) == ["other", "out"]  # the old one back, then replaced; nothing left

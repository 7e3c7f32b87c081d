"""prepro.py: the vocab files, written whole; damaged or half-written files rebuilt; corpora refused in one line."""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import files
import prepro
import shards
import train
import vocab
from conftest import (SESSION_TRAIN, assert_one_line_error, corpus_flags, fail_on_call, fails, flag, run_script,
                      snapshot, toy_pairs, write_lines)
from hyperparams import Hyperparams
from messages import UserError


@pytest.mark.e2e
def test_a_full_disk_while_prepro_writes_keeps_the_whole_old_vocab(trained_copy, tmp_path, capsys, monkeypatch):
    directory, flags = trained_copy
    vocab_dir = Path(flag(flags, "vocab_dir"))
    before = snapshot(vocab_dir)
    other = corpus_flags(tmp_path, toy_pairs(64, seed=5), toy_pairs(2, seed=2))[:4]  # another training text
    fail_on_call(monkeypatch, files.os, "fsync", 2, OSError(errno.ENOSPC, "No space left on device"))
    line = fails(prepro.main, "prepro.py", other + ["--vocab_dir", vocab_dir], capsys, monkeypatch, after_work=True)
    assert f"cannot write {vocab_dir / 'en.vocab.tsv'} (No space left on device)" in line
    assert snapshot(vocab_dir) == before  # the complete old set, and no temporary file


@pytest.mark.e2e
def test_a_vocab_set_mixed_by_a_kill_is_refused(trained_model, tmp_path):
    directory, flags = trained_model
    vocab_dir = tmp_path / "vocab"
    shutil.copytree(flag(flags, "vocab_dir"), vocab_dir)
    other = corpus_flags(tmp_path, toy_pairs(64, seed=5), toy_pairs(2, seed=2))[:4]
    replace = os.replace

    def killed_after_the_first_rename(src, dst):
        if dst.endswith(vocab.TGT_VOCAB):
            raise SystemExit("killed")
        replace(src, dst)

    os.replace = killed_after_the_first_rename
    try:
        with pytest.raises(SystemExit):
            prepro.main(other + ["--vocab_dir", str(vocab_dir)])
    finally:
        os.replace = replace
    hp = Hyperparams(vocab_dir=str(vocab_dir), min_cnt=1)
    with pytest.raises(UserError, match=r"de.vocab.tsv is not the file .*corpus.json lists .* run prepro.py"):
        vocab.load_vocabs(hp)


def test_a_corpus_with_no_word_after_refining_is_refused(tmp_path, capsys, monkeypatch):
    src = write_lines(tmp_path / "n.de", ["12 !", "3 - 4 ."])
    tgt = write_lines(tmp_path / "n.en", ["one", "two"])
    line = fails(prepro.main, "prepro.py", ["--source_train", src, "--target_train", tgt,
                                             "--vocab_dir", tmp_path / "v"], capsys, monkeypatch, after_work=True)
    assert f"{src}: no word is left once the text is refined" in line
    assert not (tmp_path / "v").exists()


@pytest.mark.e2e
def test_a_min_cnt_that_leaves_no_word_is_refused(trained_model, tmp_path):
    directory, flags = trained_model
    with pytest.raises(UserError, match=r"de.vocab.tsv: no word is seen at least --min_cnt 1000 times"):
        train.main(flags + SESSION_TRAIN + ["--min_cnt", "1000", "--logdir", str(tmp_path / "l")])


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


@pytest.mark.e2e
def test_missing_corpus_leaves_no_vocab(tmp_path):
    result = run_script("prepro.py", cwd=tmp_path)  # the default IWSLT paths do not exist here
    assert_one_line_error(result, "corpora/train.tags.de-en.de not found", "download.py", "--source_train")
    assert not (tmp_path / "preprocessed").exists()


@pytest.mark.parametrize("suffix, source_lines, target_lines, message", [
    ("", ["eins", "zwei", "drei"], ["one", "two"], "has 3 lines but"),
    ("", ["eins", "zwei", "drei"], [], "has 3 lines but"),
    ("", [], [], "hold no sentence pairs"),
    (".xml", ['<seg id="1"> eins </seg>', '<seg id="2"> zwei'], ['<seg id="1"> one </seg>'] * 2,
     "a.de.xml:2: malformed <seg> line"),
], ids=["short", "empty-target", "both-empty", "malformed-xml"])
def test_broken_corpus(tmp_path, suffix, source_lines, target_lines, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write_lines(tmp_path / f"a.de{suffix}", source_lines)
    tgt = write_lines(tmp_path / f"a.en{suffix}", target_lines)
    line = fails(prepro.main, "prepro.py", ["--source_train", src, "--target_train", tgt], capsys, monkeypatch,
                 after_work=True)  # the progress bar of the counting that found the fault
    assert message in line and "a.de" in line
    assert not (tmp_path / "preprocessed").exists()


def test_corpus_not_in_utf8(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.de").write_bytes("eins\nGr\u00fc\u00dfe\n".encode("latin-1"))
    tgt = write_lines(tmp_path / "a.en", ["one", "greetings"])
    line = fails(prepro.main, "prepro.py", ["--source_train", tmp_path / "a.de", "--target_train", tgt], capsys,
                 monkeypatch, after_work=True)
    assert f"{tmp_path / 'a.de'}:2: not valid UTF-8" in line and "iconv" in line
    assert not (tmp_path / "preprocessed").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["shards not a list", "an entry without bytes", "not JSON"])
def test_a_damaged_manifest_is_one_line_and_prepro_rebuilds_it(trained_copy, capsys, monkeypatch, damage):
    directory, flags = trained_copy
    manifest = Path(flag(flags, "vocab_dir")) / "ids_word" / "manifest.json"
    record = json.loads(manifest.read_text())
    if damage == "shards not a list":
        record["shards"] = {"train-00000.tfrecord": 1}
    elif damage == "an entry without bytes":
        del record["shards"][0]["bytes"]
    manifest.write_text("{" if damage == "not JSON" else json.dumps(record))
    line = fails(train.main, "train.py", flags + SESSION_TRAIN + ["--num_epochs", "3"], capsys, monkeypatch)
    assert f"{manifest} is damaged (" in line and "run prepro.py with the same settings again" in line
    prepro.main(flags)  # the advised repair
    assert json.loads(manifest.read_text())["shards"][0]["bytes"] > 0
    assert "writing the id shards" in capsys.readouterr().out


@pytest.mark.e2e
def test_a_damaged_corpus_json_is_rebuilt_by_prepro(trained_copy, capsys):
    directory, flags = trained_copy
    corpus_json = Path(flag(flags, "vocab_dir")) / vocab.VOCAB_MANIFEST
    corpus_json.write_text(json.dumps({**json.loads(corpus_json.read_text()), "files": []}))
    with pytest.raises(UserError, match=r"corpus.json is damaged \(files is not an object\); run prepro.py again"):
        vocab.load_vocabs(Hyperparams(vocab_dir=flag(flags, "vocab_dir"), min_cnt=1))
    prepro.main(flags)
    assert json.loads(corpus_json.read_text())["files"]["de.vocab.tsv"]
    vocab.load_vocabs(Hyperparams(vocab_dir=flag(flags, "vocab_dir"), min_cnt=1))


@pytest.mark.e2e
def test_what_a_killed_prepro_left_half_written_is_removed(trained_copy):
    directory, flags = trained_copy
    vocab_dir = Path(flag(flags, "vocab_dir"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = [vocab_dir / f"de.vocab.tsv.tmp{dead.stdout.strip()}",
            vocab_dir / "ids_word" / f"train-00000.tfrecord.tmp{dead.stdout.strip()}"]
    for path in left:
        path.write_bytes(b"half")
    (vocab_dir / "ids_word" / "manifest.json").unlink()  # so that the shards are written again
    prepro.main(flags)
    assert not any(path.exists() for path in left)


@pytest.mark.e2e
def test_a_full_disk_while_shards_are_written_ends_in_a_line_of_its_own(trained_copy, capsys, monkeypatch):
    directory, flags = trained_copy
    (Path(flag(flags, "vocab_dir")) / "ids_word" / "manifest.json").unlink()

    def disk_full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.tf.io.TFRecordWriter, "write", disk_full)
    line = fails(prepro.main, "prepro.py", flags, capsys, monkeypatch, after_work=True)
    assert line.startswith("prepro.py: error: cannot write the id shards") and "No space left on device" in line
    assert not [p for p in (Path(flag(flags, "vocab_dir")) / "ids_word").iterdir() if ".tmp" in p.name]

"""files.py: outputs written whole through whatever the path is, JSON records checked as a whole, orphans removed."""
import errno
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

import files
import hyperparams
from conftest import fails, write_lines
from files import parse_json, read_record, remove_orphans, shape_problem, write_atomic, write_files
from hyperparams import Hyperparams
from messages import UserError


def test_a_regular_file_is_replaced_whole_and_keeps_its_permissions(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(str(path), "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left


def test_a_symbolic_link_is_written_through_to_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target, link = tmp_path / "real" / "results.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target)
    write_atomic(str(link), "new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "real" / "later.txt")
    write_atomic(str(dangling), "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.txt").read_text() == "made"


def test_devices_are_written_to_directly_and_a_full_one_is_one_line(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("this system has no /dev/full")
    before = os.stat("/dev/null")
    write_atomic("/dev/null", "nothing")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev  # still the device
    with pytest.raises(UserError, match=r"cannot write /dev/full \(No space left on device\)"):
        write_atomic("/dev/full", "x" * 100000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_fifo_gets_the_text_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()))
    reader.start()
    write_atomic(str(fifo), "through the pipe\n")
    reader.join(timeout=30)
    assert received == ["through the pipe\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_directory_is_refused_and_nothing_else_is_written(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="dir is a directory; pass the name of a file"):
        write_files({str(tmp_path / "a.txt"): "a", str(tmp_path / "dir"): "b"})
    assert sorted(os.listdir(tmp_path)) == ["dir"]


@pytest.mark.e2e
def test_a_script_s_output_through_a_device_symlink_and_full_device(trained_model, tmp_path, capsys, monkeypatch):
    """translate.py --output, end to end: the severe case of the fault table."""
    import translate
    directory, flags = trained_model
    german = ["--input", str(directory / "test.de")]

    translate.main([*flags, *german, "--output", "/dev/null"])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    line = fails(translate.main, "translate.py", [*flags, *german, "--output", "/dev/full"], capsys, monkeypatch,
                 after_work=True)
    assert line == ("translate.py: error: cannot write /dev/full (No space left on device); free some space or "
                    "choose another path (nothing was changed)")
    (tmp_path / "target.txt").write_text("")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    translate.main([*flags, *german, "--output", str(tmp_path / "link.txt")])
    assert (tmp_path / "link.txt").is_symlink() and len((tmp_path / "target.txt").read_text().splitlines()) == 37

SHAPE = {"name": str, "count": int, "score?": float, "items": [{"id": int, "tags": {str: int}}], "maybe": (str, None)}


@pytest.mark.parametrize("value, problem", [
    ({"name": "a", "count": 1, "items": [], "maybe": None}, None),
    ({"name": "a", "count": 1, "score": 2, "items": [{"id": 1, "tags": {"x": 2}}], "maybe": "b"}, None),
    ([], "the file is not an object"),
    ({"name": "a", "items": [], "maybe": None}, "count is missing"),
    ({"name": "a", "count": True, "items": [], "maybe": None}, "count is not an integer"),
    ({"name": "a", "count": 1.5, "items": [], "maybe": None}, "count is not an integer"),
    ({"name": "a", "count": 1, "score": "x", "items": [], "maybe": None}, "score is not a number"),
    ({"name": "a", "count": 1, "items": {}, "maybe": None}, "items is not a list"),
    ({"name": "a", "count": 1, "items": [{"id": 1}], "maybe": None}, "items[0].tags is missing"),
    ({"name": "a", "count": 1, "items": [{"id": 1, "tags": {"x": "y"}}], "maybe": None}, "items[0].tags.x is not an"),
    ({"name": "a", "count": 1, "items": [], "maybe": 3}, "maybe is not a str"),
])
def test_record_shapes(value, problem):
    found = shape_problem(value, SHAPE)
    assert found == problem if problem is None else found.startswith(problem)


def test_json_nested_as_deep_as_allowed_is_read_and_deeper_is_refused():
    assert parse_json("[" * 32 + "]" * 32) == eval("[" * 32 + "]" * 32)
    assert parse_json('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    for text in ("[" * 33 + "]" * 33, "[" * 20000, "[" * 20000 + "]" * 20000):
        with pytest.raises(ValueError, match="nested more than 32 levels deep|Expecting"):
            parse_json(text)


def test_a_damaged_record_is_one_line_or_taken_for_absent(tmp_path):
    path = tmp_path / "record.json"
    assert read_record(str(path), {"a": int}, fix="run it again") is None  # no file
    too_deep = "[" * 100000 + "]" * 100000  # deeper than Python's parser can go: no RecursionError
    for text, why in (("{", "not JSON"), ('{"a": "1"}', "a is not an integer"), ("\xff", "not JSON"),
                      (too_deep, "nested more than 32 levels deep"), ('{"a": ' + "[" * 33 + "]" * 33 + "}",
                                                                        "nested more than 32 levels deep")):
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(UserError, match=rf"record.json is damaged \({why}.*\); run it again"):
            read_record(str(path), {"a": int}, fix="run it again")
        assert read_record(str(path), {"a": int}) is None  # its writer is about to replace it
    path.write_text(json.dumps({"a": 1, "b": 2}))
    assert read_record(str(path), {"a": int}) == {"a": 1, "b": 2}


@pytest.mark.e2e
def test_orphans_of_dead_processes_are_removed_and_others_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    names = [f"train-00000.tfrecord.tmp{pid}", f"train-00001.tfrecord.tmp{os.getpid()}", "notes.tmp1",
             f"manifest.json.tmp{pid}", "train-00000.tfrecord"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_orphans(str(tmp_path), r"train-\d{5}\.tfrecord|manifest\.json") == 2
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:3] + names[4:])


def test_a_full_disk_while_writing_leaves_the_old_files(tmp_path, monkeypatch):
    (tmp_path / "a").write_text("old a")
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(UserError, match=r"cannot write .*b \(No space left on device\).*\(nothing was changed\)"):
        write_files({str(tmp_path / "a"): "new a", str(tmp_path / "b"): "new b"})
    assert sorted(os.listdir(tmp_path)) == ["a"] and (tmp_path / "a").read_text() == "old a"


def test_a_full_disk_at_the_writability_check_leaves_no_probe(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    original = open

    def full(path, *args, **kwargs):  # the file is created, and then nothing fits
        f = original(path, *args, **kwargs)
        if ".write_test" in str(path):
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(UserError, match="cannot write to --results_dir .* \\(No space left on device\\)"):
        files.check_writable(str(tmp_path / "results"), "results_dir")
    monkeypatch.undo()
    assert os.listdir(tmp_path / "results") == []


@pytest.mark.parametrize("script, flag", [("train.py", "logdir"), ("eval.py", "results_dir"),
                                          ("prepro.py", "vocab_dir")])
def test_unwritable_output_directory_is_refused_before_any_work(tmp_path, script, flag, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("not a directory")
    corpus = [write_lines(tmp_path / "t.de", ["eins zwei"]), write_lines(tmp_path / "t.en", ["one two"])]
    hyperparams.save(Hyperparams(logdir=str(tmp_path / "logdir")))  # eval.py first reads a model's settings
    logdir = [] if flag == "logdir" else ["--logdir", tmp_path / "logdir"]
    import eval as evaluate
    import prepro
    import train
    main = {"train.py": train.main, "eval.py": evaluate.main, "prepro.py": prepro.main}[script]
    line = fails(main, script, [f"--{flag}", tmp_path / "a_file" / "out", "--source_train", corpus[0],
                                "--target_train", corpus[1], *logdir], capsys, monkeypatch)
    assert f"cannot write to --{flag} {tmp_path / 'a_file' / 'out'}" in line

"""serve.py's own flags, each refused with a message of its own before any model is loaded, and the address it
says it serves on; translate.py's --nbest and --input edges. No model, no server."""
import pytest

import serve
import translate
from conftest import fails
from hyperparams import Hyperparams
from messages import UserError

FLAGS = [
    (["--port", "99999"], "--port must be in [0, 65535] (0: any free port), got 99999"),
    (["--port", "-1"], "--port must be in [0, 65535] (0: any free port), got -1"),
    (["--max_wait_ms", "-1"], "--max_wait_ms must be between 0 and 60,000, got -1.0"),
    (["--max_wait_ms", "inf"], "--max_wait_ms must be between 0 and 60,000, got inf"),
    (["--max_wait_ms", "nan"], "--max_wait_ms must be between 0 and 60,000, got nan"),
    (["--max_queue", "0"], "--max_queue must be at least 1, got 0"),
    (["--max_beam_size", "65"], "--max_beam_size must be at most 64, got 65"),
    (["--api_keys", "no-keys.txt"], "--api_keys no-keys.txt: no such file; write the keys in a text file, one a line"),
]


@pytest.mark.parametrize("argv, line", FLAGS, ids=[" ".join(argv) for argv, _ in FLAGS])
def test_each_serve_flag_out_of_range_has_its_own_line(tmp_path, argv, line, capsys, monkeypatch):
    said = fails(serve.main, "serve.py", ["--logdir", tmp_path / "nowhere", *argv], capsys, monkeypatch)
    assert said == f"serve.py: error: {line}"


def test_a_server_open_to_others_without_keys_is_warned_of():
    assert serve.exposed("0.0.0.0", None) and "--api_keys" in serve.exposed("::", None)
    assert not serve.exposed("127.0.0.1", None) and not serve.exposed("::1", None)
    assert not serve.exposed("0.0.0.0", keys=object())


def test_split_sentences_and_nbest_lists_exclude_each_other(tmp_path, capsys, monkeypatch):
    said = fails(translate.main, "translate.py", ["--logdir", tmp_path, "--split_sentences", "--nbest", "2", "x"],
                 capsys, monkeypatch)
    assert said.startswith("translate.py: error: --nbest lists are per sentence and --split_sentences")


def test_the_address_of_an_ipv6_host_is_a_usable_url():
    assert serve.address("::1", 8000) == "http://[::1]:8000"
    assert serve.address("127.0.0.1", 8000) == "http://127.0.0.1:8000"


def test_beams_and_nbest_lists_are_capped_in_every_script(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match="--beam_size must be between 1 and 64, got 100000"):
        Hyperparams(beam_size=100000)
    said = fails(translate.main, "translate.py", ["--logdir", tmp_path, "--nbest", "100000", "eins"], capsys,
                 monkeypatch)
    assert said.endswith("error: --nbest must be between 1 and 64, got 100000")


def test_an_input_that_is_a_directory_is_named_so(tmp_path, capsys, monkeypatch):
    (tmp_path / "logdir").mkdir()
    (tmp_path / "logdir" / "hparams.json").write_text('{"hparams": {}}')
    said = fails(translate.main, "translate.py", ["--logdir", tmp_path / "logdir", "--input", tmp_path], capsys,
                 monkeypatch)
    assert said == f"translate.py: error: --input {tmp_path} is a directory; pass the file of German sentences"

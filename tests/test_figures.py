"""figures.py: the pictures of docs/img drawn from a tiny run's TensorBoard events and bench JSON lines."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

BENCH = str(ROOT / "benchmarks" / "bench.py")
FIGURES = str(ROOT / "benchmarks" / "figures.py")

pytestmark = pytest.mark.e2e


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_training_curves_and_speed_bars_are_drawn_from_what_runs_wrote(trained_model, tmp_path):
    directory, _ = trained_model
    bench = subprocess.run([sys.executable, BENCH, "--measures", "decode_cached", "--sentences", "4",
                            "--decode_len", "4", "--hidden_units", "16", "--num_blocks", "1", "--num_heads", "2"],
                           capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    (tmp_path / "ours.jsonl").write_text(bench.stdout)
    (tmp_path / "peer.jsonl").write_text(json.dumps({"peer": "kyubyong_tf1.2", "target_tokens_per_s": 2232.0}) + "\n")
    bars = ["--bench", f"ours={tmp_path / 'ours.jsonl'}", "--bench", f"the original={tmp_path / 'peer.jsonl'}"]
    result = subprocess.run([sys.executable, FIGURES, "--logdir", str(directory / "logdir"), *bars,
                             "--out", str(tmp_path / "img")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert png_size(tmp_path / "img" / "training.png") == (1000, 400)
    assert png_size(tmp_path / "img" / "speed.png") == (1000, 400)  # two panels: training and a decoding one
    result = subprocess.run([sys.executable, FIGURES, "--bench", "nolabel", "--out",
                             str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "give LABEL=FILE" in result.stderr


@pytest.mark.parametrize("text, words", [("[1, 2]\n", "records.jsonl:1: not a JSON object"),
                                         ('{"measure": "x"}\n' + "[" * 40 + "]" * 40 + "\n",
                                          "nested more than 32 levels deep")])
def test_bench_lines_that_are_not_records_are_one_line(tmp_path, text, words):
    from benchmarks import figures
    from messages import UserError

    (tmp_path / "records.jsonl").write_text(text)
    with pytest.raises(UserError, match=words):
        figures.main(["--bench", f"ours={tmp_path / 'records.jsonl'}", "--out", str(tmp_path)])


def test_records_without_a_speed_are_left_out_with_a_note(tmp_path, capsys):
    from benchmarks import figures
    from messages import UserError

    (tmp_path / "records.jsonl").write_text('{"measure": "train", "target_tokens_per_s": 1200}\n{"x": 1}\n'
                                            '{"measure": "decode", "sentences_per_s": null}\n')
    figures.main(["--bench", f"ours={tmp_path / 'records.jsonl'}", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert out.strip().endswith("speed.png: 1 of 3 records drawn") and err.count("no speed to draw") == 2
    (tmp_path / "records.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(UserError, match="no --bench record holds a speed to draw"):
        figures.main(["--bench", f"ours={tmp_path / 'records.jsonl'}", "--out", str(tmp_path)])

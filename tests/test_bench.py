"""bench.py runs and prints one JSON object per measurement with the documented keys (no timing asserted)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT


def test_synthetic_pairs_have_the_promised_lengths():
    import bench
    x, y = bench.synthetic_pairs(200, 12, seed=0)
    for ids in (x, y):
        lengths = (ids != 0).sum(1)
        assert lengths.min() >= 4 and lengths.max() <= 12
        assert (ids[np.arange(200), lengths - 1] == 3).all()  # each ends in </S>


def test_bench_refuses_an_unknown_measure(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--measures", "train_fast"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown --measures train_fast" in result.stderr


@pytest.mark.parametrize("argv, message", [(["--sentences", "0"], "--sentences must be at least 1, got 0"),
                                           (["--train_steps", "-3"], "--train_steps must be at least 1, got -3"),
                                           (["--decode_len", "0"], "--decode_len must be at least 1, got 0")])
def test_bench_refuses_counts_out_of_range(argv, message):
    import bench
    from cli import UserError
    with pytest.raises(UserError, match=message):
        bench.main(argv)


def test_bench_prints_one_json_line_per_measure(tmp_path):
    import prepro
    from conftest import corpus_flags, toy_pairs
    flags = corpus_flags(tmp_path, toy_pairs(100, seed=1), toy_pairs(5, seed=2))
    prepro.main(flags)
    argv = flags + ["--corpus", "--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--maxlen", "10",
                    "--batch_size", "8", "--batch_tokens", "40", "--train_steps", "2", "--untimed_steps", "1",
                    "--sentences", "4", "--decode_len", "6"]
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]  # stdout holds JSON only
    assert [r["measure"] for r in records] == ["train_fixed", "train_bucketed", "decode_full", "decode_cached"]
    for r in records:
        assert {"device", "settings", "peak_rss_mb"} <= set(r) and r["peak_rss_mb"] > 0
        assert r["tokens_per_s" if r["measure"].startswith("train") else "sentences_per_s"] > 0
        assert r["settings"]["data"].endswith("train.de") and r["settings"]["pairs"] == 100
    assert records[1]["settings"]["batch_tokens"] == 40
    assert records[3]["identical_to_full"] is True

"""bench.py runs and prints one JSON object per measurement with the documented keys (no timing asserted)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

BENCH = str(ROOT / "benchmarks" / "bench.py")


def test_synthetic_pairs_have_the_promised_lengths():
    from benchmarks import timing
    x, y = timing.synthetic_pairs(200, 12, seed=0)
    for ids in (x, y):
        lengths = (ids != 0).sum(1)
        assert lengths.min() >= 4 and lengths.max() <= 12
        assert (ids[np.arange(200), lengths - 1] == 3).all()  # each ends in </S>


@pytest.mark.e2e
def test_bench_refuses_an_unknown_measure(tmp_path):
    result = subprocess.run([sys.executable, BENCH, "--measures", "train_fast"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown --measures train_fast" in result.stderr


@pytest.mark.parametrize("argv, message", [(["--sentences", "0"], "--sentences must be at least 1, got 0"),
                                           (["--train_steps", "-3"], "--train_steps must be at least 1, got -3"),
                                           (["--decode_len", "0"], "--decode_len must be at least 1, got 0")])
def test_bench_refuses_counts_out_of_range(argv, message):
    from benchmarks import bench
    from messages import UserError
    with pytest.raises(UserError, match=message):
        bench.main(argv)


@pytest.mark.e2e
def test_bench_prints_one_json_line_per_measure(tmp_path):
    import prepro
    from conftest import corpus_flags, toy_pairs
    flags = corpus_flags(tmp_path, toy_pairs(100, seed=1), toy_pairs(5, seed=2))
    prepro.main(flags)
    argv = flags + ["--corpus", "--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--maxlen", "10",
                    "--batch_size", "8", "--batch_tokens", "40", "--train_steps", "2", "--untimed_steps", "1",
                    "--sentences", "4", "--decode_len", "6"]
    result = subprocess.run([sys.executable, BENCH, *argv], cwd=tmp_path,
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


@pytest.mark.e2e
def test_train_preset_runs_train_py_and_reports_its_epochs_and_memory(tmp_path):
    import prepro
    from conftest import corpus_flags, toy_pairs
    flags = corpus_flags(tmp_path, toy_pairs(120, seed=1), toy_pairs(5, seed=2))
    # the preset's settings, made tiny and pointed at the toy corpus by the flags given after it
    tiny = ["--vocab_type", "word", "--share_embeddings", "false", "--hidden_units", "16", "--num_blocks", "1",
            "--num_heads", "2", "--maxlen", "10", "--batch_tokens", "60", "--mixed_precision", "none",
            "--dev_eval", "false"]
    argv = [sys.executable, BENCH, "--measures", "train_preset", "--preset", "multi30k_cpu",
            *flags, *tiny, "--preset_epochs", "2"]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stdout == ""  # no vocab yet: train.py's own one-line error
    assert result.stderr.startswith("bench.py: error: train_preset: train.py --preset multi30k_cpu failed: ")
    assert "prepro.py" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    prepro.main(flags)
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["measure"] == "train_preset" and record["settings"]["hidden_units"] == 16
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert all(e["tokens_per_s"] > 0 and 1 <= e["batch_shapes"] <= 5 for e in record["epochs"])
    assert record["peak_rss_mb"] > 100  # train.py's own peak: TensorFlow alone takes more
    assert not (tmp_path / "logdir").exists()  # trained in a temporary logdir


@pytest.mark.e2e
def test_decode_measures_of_both_engines_beam_search_and_latency(tmp_path):
    tiny = ["--hidden_units", "32", "--num_blocks", "1", "--num_heads", "2", "--maxlen", "10", "--decode_len", "6"]
    measures = ["--measures", "decode_cached,decode_ct2_float32,decode_ct2_int8"]
    for extra in (["--beam_size", "2", "--sentences", "5"], ["--sentences", "1", "--latency_sentences", "3"]):
        result = subprocess.run([sys.executable, BENCH, *tiny, *measures, *extra], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["measure"] for r in records] == ["decode_cached", "decode_ct2_float32", "decode_ct2_int8"]
        assert all(r["sentences_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in records)
        assert all(r["settings"]["sentences"] == (5 if "--beam_size" in extra else 3) for r in records)
        assert all(("ms_per_sentence" in r) == ("--latency_sentences" in extra) for r in records)
        assert records[1]["ct2_isa"] and "tf" not in records[1]  # the CPU code CTranslate2 chose; no TensorFlow
        assert records[0]["settings"]["beam_size"] == (2 if "--beam_size" in extra else 1)



def test_bench_serve_with_no_answer_in_time_reports_no_latencies_rather_than_failing():
    from benchmarks import bench_serve

    figures = bench_serve.load(("127.0.0.1", 9), ["Ein Satz."], clients=2, requests=3, seconds=0)
    assert figures["requests"] == 0 and figures["p50_ms"] is None and figures["p99_over_p50"] is None


def test_bench_serve_paragraph_clients_send_their_sentences_in_turn(monkeypatch):
    from benchmarks import bench_serve

    sent = []

    class Connection:  # what the client sends, without a server
        def __init__(self, *address, timeout):
            assert address == ("::1", 8000)

        def request(self, method, path, body, headers):
            sent.append(json.loads(body)["text"])

        def getresponse(self):
            return type("Response", (), {"status": 200, "read": lambda self: b"{}"})()

        def close(self):
            pass

    monkeypatch.setattr(bench_serve.http.client, "HTTPConnection", Connection)
    done = bench_serve.client(("::1", 8000), ["A.", "B.", "C."], first=1, count=2, deadline=float("inf"),
                              per_request=2)
    assert [status for status, _ in done] == [200, 200] and sent == ["C. A.", "B. C."]

"""The one-command main job: make runs download -> prepro -> train -> eval on Multi30k, offline."""
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA, TINY_MODEL


@pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir(), reason="../shared/data/multi30k is absent")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_runs_the_whole_job_on_multi30k(tmp_path):
    args = " ".join(TINY_MODEL + ["--min_cnt", "3", "--maxlen", "8", "--batch_size", "128",
                                  "--num_epochs", "1"])
    # The test's own interpreter stands in for the virtual environment (-o: do not build it).
    command = ["make", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", f"PY={sys.executable}",
               "DATASET=multi30k", f"FROM={SHARED_DATA / 'multi30k'}", f"ARGS={args}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "corpora/multi30k/train.de.gz").is_file()
    assert (tmp_path / "preprocessed/de.vocab.tsv").is_file()
    results = sorted((tmp_path / "results").iterdir())
    assert [r.suffix for r in results] == ["", ".json"] and results[0].name.startswith("model_epoch_01_gs_")
    assert results[0].read_text(encoding="utf-8").splitlines()[-1].startswith("Bleu Score = ")
    assert "multi30k" in (tmp_path / "logdir/hparams.json").read_text()

"""The one-command main job: make runs download -> prepro -> train -> eval of a preset on Multi30k, offline."""
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA, TINY_MODEL

pytestmark = pytest.mark.e2e  # every test here trains a model or starts a process


@pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir(), reason="../shared/data/multi30k is absent")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_runs_the_whole_job_on_multi30k(tmp_path):
    # The multi30k_cpu preset (subwords, pre-norm, the weights' average, beam search), tiny and one epoch.
    args = " ".join(TINY_MODEL + ["--vocab_size", "1000", "--maxlen", "10", "--batch_tokens", "1024",
                                  "--num_epochs", "1", "--dev_eval", "false", "--beam_size", "2",
                                  "--decode_extra", "5"])
    # The test's own interpreter stands in for the virtual environment (-o: do not build it).
    command = ["make", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", f"PY={sys.executable}",
               "PRESET=multi30k_cpu", f"FROM={SHARED_DATA / 'multi30k'}", f"ARGS={args}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "corpora/multi30k/train.de.gz").is_file()
    assert (tmp_path / "preprocessed/subword.model").is_file()
    results = sorted((tmp_path / "results").iterdir())
    assert [r.suffix for r in results] == ["", ".json"]
    assert re.fullmatch(r"model_epoch_01_gs_\d+_beam2", results[0].name)  # the last checkpoint, beam search
    assert results[0].read_text(encoding="utf-8").splitlines()[-1].startswith("Bleu Score = ")
    assert '"preset": "multi30k_cpu"' in (tmp_path / "logdir/hparams.json").read_text()

"""The installed package is the repository: every module, so that a non-editable install runs the scripts."""
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT


def test_every_module_of_the_repository_is_installed():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"]
    assert sorted(declared) == sorted(p.stem for p in ROOT.glob("*.py"))


@pytest.mark.e2e
def test_a_non_editable_install_imports_from_another_directory(tmp_path):
    """pip install . (not editable) into a directory of its own, without downloading the dependencies, then the
    scripts' modules imported from there, in another directory, with this environment's packages."""
    source = tmp_path / "source"  # what a checkout holds for packaging; the build leaves its build/ there, not here
    source.mkdir()
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("*.py")]:
        shutil.copy(path, source)
    target = tmp_path / "installed"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                              "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    code = ("import train, shards, score, serve, ct2, engines, files, bench_serve; "
            "print(train.__file__, shards.__file__, serve.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(path.startswith(str(target)) for path in result.stdout.split())

"""The installed package is the repository: every module, so that a non-editable install runs the scripts."""
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from conftest import ROOT


WINGS = ("benchmarks", "serving")


def test_every_module_of_the_repository_is_installed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["py-modules"]) == sorted(p.stem for p in ROOT.glob("*.py"))
    assert sorted(setuptools["packages"]) == sorted(WINGS) == sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert setuptools["package-data"] == {"serving": ["page.html"]}


def checkout(tmp_path):
    """What a checkout holds for packaging, copied (the build leaves its build/ there, not in the repository)."""
    source = tmp_path / "source"
    source.mkdir()
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("*.py")]:
        shutil.copy(path, source)
    for wing in WINGS:
        shutil.copytree(ROOT / wing, source / wing, ignore=shutil.ignore_patterns("__pycache__"))
    return source


@pytest.mark.e2e
def test_a_non_editable_install_imports_from_another_directory(tmp_path):
    """pip install . (not editable) into a directory of its own, without downloading the dependencies, then the
    scripts' modules imported from there, in another directory, with this environment's packages; and the
    wheel of the same checkout, which holds every module and the page."""
    source, target = checkout(tmp_path), tmp_path / "installed"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                              "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    code = ("import train, shards, score, serve, ct2, engines, files, serving.page, benchmarks.bench_serve; "
            "assert '<title>German to English</title>' in serving.page.html(); "
            "print(train.__file__, shards.__file__, serve.__file__, serving.page.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(path.startswith(str(target)) for path in result.stdout.split())

    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    (path,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(path).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in [*ROOT.glob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
                                                         *(ROOT / "serving").glob("*.py")]} | {"serving/page.html"}
    assert expected <= names

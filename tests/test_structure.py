"""The floor plan: the pipeline at the root, the service's parts and the benchmarks in their wings; each module on
a floor, importing only from its own floor or below, without a circle; no script imports another; the code is
pyflakes-clean."""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

WINGS = ("serving", "benchmarks")
SOURCES = {**{p.stem: p for p in sorted(ROOT.glob("*.py"))},
           **{f"{wing}.{p.stem}" if p.stem != "__init__" else wing: p
              for wing in WINGS for p in sorted((ROOT / wing).glob("*.py"))}}
SCRIPTS = {name for name, p in SOURCES.items()
           if "." not in name and 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")}

# Lowest first. A module imports only modules of its own floor or of floors below it.
FLOORS = [
    ("foundations", {"messages", "files", "corpora", "fetch", "readers", "hyperparams", "cli", "vocab", "paragraphs"}),
    ("data", {"shards", "shapes", "data_load"}),
    ("model", {"modules", "model", "optimizer", "checkpoints", "weights", "decoding", "training", "plotting"}),
    ("engines", {"engine", "inference", "ct2", "ct2_export", "engines", "dev_eval"}),
    ("service", {name for name in SOURCES if name.split(".")[0] == "serving"}),
    ("scripts", SCRIPTS),
    ("benchmarks", {name for name in SOURCES if name.split(".")[0] == "benchmarks"}),
]
FLOOR = {name: level for level, (_, names) in enumerate(FLOORS) for name in names}


def imported(name):
    """The project's modules that module `name` imports, wherever in the file (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(SOURCES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {found for found in names if found in SOURCES and found != name}


IMPORTS = {name: imported(name) for name in SOURCES}


def test_the_scripts_are_the_entry_points_the_readme_names():
    assert SCRIPTS == {"prepro", "train", "eval", "translate", "export", "plot_attention", "download", "score",
                       "serve"}


def test_every_module_has_its_floor_and_the_wings_hold_what_is_theirs():
    assert sorted(FLOOR) == sorted(SOURCES)  # a new module is placed deliberately
    root = {name for name in SOURCES if "." not in name and name not in WINGS}
    assert not root & {"bench", "bench_corpus", "bench_serve", "figures", "speed", "timing", "charts", "batching",
                       "serve_page"}
    assert {"bench", "bench_corpus", "bench_serve", "figures", "timing", "charts"} <= {
        name.split(".")[1] for name in SOURCES if name.startswith("benchmarks.")}
    assert {"serving.batching", "serving.page"} <= set(SOURCES) and (ROOT / "serving" / "page.html").is_file()


def test_no_import_runs_up_a_floor():
    upward = {f"{name} -> {other}": f"{FLOORS[FLOOR[name]][0]} -> {FLOORS[FLOOR[other]][0]}"
              for name, others in IMPORTS.items() for other in others if FLOOR[other] > FLOOR[name]}
    assert upward == {}


def test_no_import_circle():
    """Depth-first search for a way back to a module on the path (imports inside functions count)."""
    circles, done = [], set()

    def visit(name, path):
        if name in path:
            circles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for other in sorted(IMPORTS[name]):
            visit(other, path + [name])
        done.add(name)

    for name in sorted(SOURCES):
        visit(name, [])
    assert circles == []


def test_no_module_imports_a_script():
    offenders = {name: sorted(IMPORTS[name] & (SCRIPTS - {name})) for name in SOURCES}
    assert {name: scripts for name, scripts in offenders.items() if scripts} == {}


@pytest.mark.e2e
def test_training_needs_no_plotting_library():
    """train.py imports with matplotlib unimportable: only drawing (dev evaluation's picture) needs it.

    (Keras itself imports matplotlib.pyplot when it is installed, so its absence
    from sys.modules cannot be asked for; that nothing of ours needs it can.)
    """
    code = "import sys; sys.modules['matplotlib'] = None; import train, plotting; print('imported')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "imported"


@pytest.mark.e2e
def test_pyflakes_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "pyflakes", *map(str, SOURCES.values()),
                             *map(str, ROOT.glob("tests/*.py"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_imports_cli_before_any_module_that_takes_time():
    """cli.py, imported first, makes a Ctrl-C while the script starts one line and exit code 130."""
    for name, path in SOURCES.items():
        if name not in SCRIPTS and not (name.startswith("benchmarks.") and "__main__" in path.read_text()):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        first = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                     and (node.names[0].name if isinstance(node, ast.Import) else node.module).split(".")[0]
                     not in sys.stdlib_module_names)
        name = first.names[0].name if isinstance(first, ast.Import) else first.module
        assert name == "cli", f"{path.name} imports {name} before cli"

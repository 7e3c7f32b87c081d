"""The layout: library modules below, scripts on top; no script imports another; the code is pyflakes-clean."""
import ast
import subprocess
import sys

from conftest import ROOT

SOURCES = sorted(ROOT.glob("*.py"))
SCRIPTS = {p.stem for p in SOURCES if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")}


def imported(path):
    """The top-level names of the modules a file imports, wherever in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_scripts_are_the_entry_points_the_readme_names():
    assert SCRIPTS == {"prepro", "train", "eval", "translate", "export", "plot_attention", "download", "score",
                       "serve"}


def test_no_module_imports_a_script():
    offenders = {p.name: sorted(imported(p) & (SCRIPTS - {p.stem})) for p in SOURCES}
    assert {name: scripts for name, scripts in offenders.items() if scripts} == {}


def test_training_needs_no_plotting_library():
    """train.py imports with matplotlib unimportable: only drawing (dev evaluation's picture) needs it.

    (Keras itself imports matplotlib.pyplot when it is installed, so its absence
    from sys.modules cannot be asked for; that nothing of ours needs it can.)
    """
    code = "import sys; sys.modules['matplotlib'] = None; import train, plotting; print('imported')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "imported"


def test_pyflakes_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "pyflakes", *map(str, SOURCES), *map(str, ROOT.glob("tests/*.py"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_imports_cli_before_any_module_that_takes_time():
    """cli.py, imported first, makes a Ctrl-C while the script starts one line and exit code 130."""
    for path in SOURCES:
        if path.stem not in SCRIPTS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        first = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                     and (node.names[0].name if isinstance(node, ast.Import) else node.module).split(".")[0]
                     not in sys.stdlib_module_names)
        name = first.names[0].name if isinstance(first, ast.Import) else first.module
        assert name == "cli", f"{path.name} imports {name} before cli"

"""The commands in README.md, docs/tutorial.md and docs/reference.md work, and their links lead somewhere.

Every command in a ```bash block is checked. The quick ones run for real in a
sandbox directory that stands in for a fresh checkout after download.py: a
toy corpus at the IWSLT 2016 paths and a tiny model in `logdir`. Those that need the real corpora or
hours (train.py, a preset, another corpus or vocab) have their flags parsed
and checked by the script's own parser; download.py runs with its fetchers
stubbed out; make commands run with `make -n`; `tensorboard --logdir logdir`
is started and asked for the run's tags; serve.py is started (once for each set of
flags) and asked for its health, curl asks the serve.py started above it, and each
serve.py must end with exit code 0 on SIGTERM at the end. Each block is a test
of its own, named after its document and number (README.md:3).
"""
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from benchmarks import bench
import cli
import download
import eval as evaluate
import export
import hyperparams
import plot_attention
import prepro
import score
import serve
import train
import translate
from conftest import GERMAN, ROOT, toy_pairs, write_lines

DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "tutorial.md", ROOT / "docs" / "reference.md"]
SCRIPTS = {  # script -> (module, the flags it adds to the settings)
    "prepro.py": (prepro, None), "train.py": (train, None), "eval.py": (evaluate, evaluate.add_eval_flags),
    "translate.py": (translate, translate.add_translate_flags), "export.py": (export, export.add_export_flags),
    "plot_attention.py": (plot_attention, plot_attention.add_plot_flags),
    "benchmarks/bench.py": (bench, bench.add_bench_flags),
    "score.py": (score, score.add_score_flags), "serve.py": (serve, serve.add_serve_flags),
}
SLOW = {"train.py", "benchmarks/bench.py"}  # always only parsed
OTHER_DATA = {"--preset", "--dataset", "--vocab_dir", "--source_train"}  # parsed: they need data the sandbox lacks
SETUP = re.compile(r"^(python3 -m venv |\. \.venv/bin/activate$)")  # the install lines, which CI runs


def blocks(path, language):
    """The code blocks of one language in a Markdown file, as strings."""
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


def commands(block):
    """The shell commands of a bash block: continuation lines joined, comments dropped."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            found.append((line.strip(), words))
    return found


def xml(lines):
    return ['<doc docid="1">'] + [f'<seg id="{i}"> {line} </seg>' for i, line in enumerate(lines, 1)] + ["</doc>"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A directory with a toy corpus at the default IWSLT 2016 paths and a tiny model trained in logdir."""
    directory = tmp_path_factory.mktemp("readme")
    corpora = directory / "corpora"
    train_pairs, test_pairs = toy_pairs(300, seed=1), toy_pairs(12, seed=2)
    for lang, side in (("de", 0), ("en", 1)):
        write_lines(corpora / f"train.tags.de-en.{lang}", ["<url>http://example.org/talk</url>"] +
                    [pair[side] for pair in train_pairs])
        for split, pairs in (("tst2013", test_pairs[:6]), ("tst2014", test_pairs[6:])):
            write_lines(corpora / f"IWSLT16.TED.{split}.de-en.{lang}.xml", xml(pair[side] for pair in pairs))
    write_lines(directory / "german.txt", [" ".join(GERMAN[:4]), "", "Zwei Hunde spielen im Schnee."])
    german, english = zip(*test_pairs)
    write_lines(directory / "mono.de", german)  # monolingual text to back-translate
    write_lines(directory / "test.de", german)  # translations to score
    write_lines(directory / "test.en", english)
    for script in ROOT.glob("*.py"):  # the scripts beside the data, as in a checkout
        (directory / script.name).symlink_to(script)
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        prepro.main([])
        train.main(["--hidden_units", "32", "--num_blocks", "2", "--num_heads", "2", "--batch_size", "32",
                    "--num_epochs", "3", "--summary_every", "4", "--dev_eval", "true"])
    finally:
        os.chdir(cwd)
    for member in ("logdir_seed2", "logdir_seed3"):  # stand-ins for models trained with other seeds, to ensemble
        shutil.copytree(directory / "logdir", directory / member)
    return directory


BLOCKS = [(path, number, block) for path in DOCUMENTS for number, block in enumerate(blocks(path, "bash"), 1)]


@pytest.fixture(scope="module")
def started():
    """What the blocks start and later blocks use: serve.py processes, by their flags ({flags: (process, its
    address)}, the newest last, which a curl line below asks). Whatever is still running at the end is stopped."""
    serves = {}
    yield serves
    for process, _ in serves.values():
        stop(process)


@pytest.mark.e2e
@pytest.mark.parametrize("path, number, block", BLOCKS, ids=[f"{p.name}:{n}" for p, n, _ in BLOCKS])
def test_command_block_works(path, number, block, sandbox, started, monkeypatch, capsys):
    """Each ```bash block of the documents, its commands in order (one test per block, so each failure is named)."""
    monkeypatch.chdir(sandbox)
    fetched = []
    monkeypatch.setattr(download, "multi30k", lambda args: fetched.append(args.dataset))
    monkeypatch.setattr(download, "iwslt2016", lambda args: fetched.append(args.dataset))
    for line, words in commands(block):
        check_command(path, line, words, sandbox, started, fetched)
        if words[:2] == ["python", "translate.py"] and "--nbest" in words:
            assert " ||| " in capsys.readouterr().out, line


@pytest.mark.e2e
def test_the_libretranslate_client_example_against_the_service_of_the_readme(sandbox, started):
    """The README's LibreTranslate client lines, as written but for the port, against its serve.py."""
    start_serve(("--logdir", "logdir"), started, sandbox)  # (the README's own, if its block ran already)
    [example] = [b for path in DOCUMENTS for b in blocks(path, "python") if "LibreTranslateAPI" in b]
    address = started[("--logdir", "logdir")][1]
    result = subprocess.run([sys.executable, "-c", example.replace("http://127.0.0.1:8000", address)], cwd=sandbox,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    german = re.search(r'translate\("([^"]+)"', example)[1]
    request = urllib.request.Request(address + "/translate", data=json.dumps({"text": german}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # what the service's own API says
        assert result.stdout == json.load(response)["translations"][0] + "\n"


@pytest.mark.e2e
def test_the_services_end_cleanly_and_the_commands_left_what_they_promise(sandbox, started):
    """After every block: each serve.py the documents started ends with exit code 0 on SIGTERM, and the files
    the commands write are there."""
    assert started, "no document starts serve.py"
    stopped = {argv: stop(process) for argv, (process, _) in started.items()}
    started.clear()
    assert all(code == 0 for code in stopped.values()), stopped
    english = (sandbox / "english.txt").read_text(encoding="utf-8").splitlines()
    assert len(english) == 3 and english[1] == ""  # a line per input line; the empty one stays empty
    assert (sandbox / "exported" / "saved_model.pb").exists()
    assert (sandbox / "attention.png").stat().st_size > 0 and (sandbox / "layer1.png").stat().st_size > 0
    assert any(p.name.endswith("_avg3_beam4") for p in (sandbox / "results").iterdir())
    assert any(p.name.endswith("_ens3_beam4") for p in (sandbox / "results").iterdir())
    assert len((sandbox / "synthetic.en").read_text(encoding="utf-8").splitlines()) == 12
    scores = (sandbox / "scores.tsv").read_text(encoding="utf-8").splitlines()
    assert len(scores) == 12 and all(float(line.split("\t")[0]) < 0 for line in scores)


@pytest.mark.e2e
def test_the_python_example_of_loading_the_savedmodel(sandbox):
    """The Python example of loading the SavedModel, as written, on the model the sandbox exports."""
    if not (sandbox / "exported" / "saved_model.pb").exists():  # the export is a command of the documents
        export.main(["--out", str(sandbox / "exported"), "--logdir", str(sandbox / "logdir"),
                     "--vocab_dir", str(sandbox / "preprocessed")])
    [example] = [b for path in DOCUMENTS for b in blocks(path, "python") if "saved_model.load" in b]
    result = subprocess.run([sys.executable, "-c", example], cwd=sandbox, capture_output=True, text=True)
    assert result.returncode == 0 and "tf.Tensor(" in result.stdout, result.stderr[-2000:]


def check_command(path, line, words, sandbox, serves, fetched):
    """Runs or checks one command of a document."""
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value python ...: only the command is checked
        words.pop(0)
    if words[:2] == ["python", "-m"]:  # python -m benchmarks.bench: the file benchmarks/bench.py
        words = ["python", words[2].replace(".", "/") + ".py", *words[3:]]
    if SETUP.match(line):
        return
    if words[0] == "make":
        result = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), *words[1:]], cwd=sandbox,
                                capture_output=True, text=True)
        assert result.returncode == 0 and "train.py" in result.stdout, (line, result.stderr)
    elif words[0] == "tensorboard":
        check_tensorboard(*start_tensorboard(words, sandbox))
    elif words[0] == "curl":
        assert serves, f"{line!r}: no serve.py was started above it"
        ask_serve(words, list(serves.values())[-1][1])
    elif words[1] == "serve.py" and not OTHER_DATA & set(words):
        start_serve(tuple(words[2:]), serves, sandbox)
    elif words[:2] == ["python", "download.py"]:
        download.main(words[2:])
        assert fetched.pop() in ("multi30k", "iwslt2016")
    elif {"|", ">"} & set(words):
        path_variable = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"  # the venv's python first
        shell = subprocess.run(["bash", "-c", line], cwd=sandbox, capture_output=True, text=True,
                               env={**os.environ, "PATH": path_variable})
        assert shell.returncode == 0, (line, shell.stderr[-2000:])
    else:
        assert words[0] == "python" and words[1] in SCRIPTS, f"{path.name}: no check for {line!r}"
        module, add_flags = SCRIPTS[words[1]]
        argv = words[2:]
        if words[1] in SLOW or OTHER_DATA & {w.split("=")[0] for w in argv}:  # only parsed
            explicit, _ = cli.parse_args(argv, description="", add_arguments=add_flags)
            hyperparams.Hyperparams(**explicit)  # the values are valid together
        else:
            module.main(argv)


def start_tensorboard(words, sandbox):
    """Starts the command on a free port: (the process, the port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    program = os.path.join(os.path.dirname(sys.executable), words[0])
    return subprocess.Popen([program, *words[1:], "--port", str(port), "--host", "127.0.0.1"], cwd=sandbox,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), port


def check_tensorboard(server, port):
    """Waits until the server serves the run's scalar tags, checks them and stops it."""
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.load(r)
                if tags:
                    break
            except OSError:
                time.sleep(1)
        assert tags, server.stderr.read() if server.poll() is not None else "no tags served"
        scalars = set(next(iter(tags.values())))
        assert {"mean_loss", "acc", "lr", "grad_norm", "tokens_per_s", "dev_loss", "dev_acc", "dev_bleu"} <= scalars
    finally:
        server.terminate()
        server.wait(timeout=30)


def serve_process(argv, sandbox):
    """serve.py started with argv (its port replaced by a free one): (the process, its address)."""
    argv = [w for i, w in enumerate(argv) if w != "--port" and (i == 0 or argv[i - 1] != "--port")]
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), *argv, "--port", "0"], cwd=sandbox,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        found = re.search(r"serving .* on (http://\S+)", line)
        if found:
            return process, found[1]
    raise AssertionError(f"serve.py {' '.join(argv)} did not start")


def start_serve(argv, serves, sandbox):
    """serve.py started with argv unless the documents started it so before; it must say it is healthy."""
    if argv not in serves:
        serves[argv] = serve_process(list(argv), sandbox)
        with urllib.request.urlopen(serves[argv][1] + "/health", timeout=30) as response:
            assert json.load(response)["status"] == "ok"
    serves[argv] = serves.pop(argv)  # the newest one started: the one a curl line below asks


def stop(process):
    """SIGTERM: the process' exit code (or that it did not stop within a minute, when it is killed)."""
    process.terminate()
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return "did not stop"


def ask_serve(words, address):
    """The curl command, sent to the serve.py started above it: /translate must answer with translations (and
    the n-best lists asked for), /metrics with Prometheus' text format."""
    line = [re.sub(r"^(https?://)?127\.0\.0\.1:\d+", address, w) for w in words]
    result = subprocess.run(line, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    if any(w.endswith("/metrics") for w in words):
        from prometheus_client.parser import text_string_to_metric_families

        assert "translation_sentences" in {f.name for f in text_string_to_metric_families(result.stdout)}
        return
    answer = json.loads(result.stdout)
    assert answer["translations"] and all(len(s["nbest"]) == 2 for s in answer["sentences"][0])


def slug(heading):
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_lead_to_files_and_headings():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?://", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.name}: {target} does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
                assert anchor in {slug(h) for h in headings}, f"{path.name}: no heading for {target}"

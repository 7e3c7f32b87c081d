"""The scripts as users run them: bad input gives one line on stderr, exit code 2, no output file."""
import dataclasses
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli
import hyperparams
from cli import parse_args
from conftest import ROOT, assert_one_line_error, fails, flag, run_script
from hyperparams import Hyperparams


@pytest.mark.e2e
def test_unknown_flag(tmp_path):
    result = run_script("train.py", "--hidden_unit", "8", cwd=tmp_path)
    assert_one_line_error(result, "unrecognized arguments: --hidden_unit")


@pytest.mark.e2e
@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.5])
def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path, delay):
    """SIGINT at moments that land in the interpreter's start, in TensorFlow's import and after it."""
    process = subprocess.Popen([sys.executable, str(ROOT / "eval.py"), "--logdir", str(tmp_path / "none")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if process.returncode == 2:  # it had already ended on its own, with its one line
        assert err.splitlines() == [err.strip()] and "run train.py first" in err
        return
    assert process.returncode == 130, err
    assert err.strip() == "eval.py: interrupted" and out == ""


@pytest.mark.e2e
def test_train_py_interrupted_while_importing_tensorflow(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--logdir", str(tmp_path / "log")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # TensorFlow takes seconds to import
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip() == "train.py: interrupted", err
    assert not (tmp_path / "log").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("script", ["prepro.py", "eval.py", "translate.py"])
def test_a_python_without_the_project_s_packages_is_one_line(tmp_path, script):
    """python3 prepro.py outside the .venv: -S hides the site-packages as a Python without them would."""
    result = subprocess.run([sys.executable, "-S", str(ROOT / script), "--source_train", str(tmp_path / "none.de")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"{script}: error: {sys.executable} has no module ")
    assert ".venv/bin/pip install -e ." in result.stderr


def test_help_lists_the_settings_a_script_reads(capsys):
    shown = {}
    for script in ("prepro.py", "train.py", "eval.py", "translate.py", "score.py", "export.py", "serve.py"):
        with pytest.raises(SystemExit) as ended:
            importlib.import_module(script.removesuffix(".py")).main(["--help"])
        assert ended.value.code == 0
        shown[script] = set(re.findall(r"--(\w+)", capsys.readouterr().out))
    assert "lr" in shown["train.py"] and not {"lr", "adam_beta1", "num_epochs"} & shown["eval.py"]
    assert {"beam_size", "results_dir", "test_split", "ct2", "all"} <= shown["eval.py"]
    assert {"vocab_size", "min_cnt"} <= shown["prepro.py"] and "hidden_units" not in shown["prepro.py"]
    assert {"max_batch_tokens", "max_queue", "ct2", "host", "port"} <= shown["serve.py"]
    assert {"format", "quantization", "overwrite"} <= shown["export.py"] and "results_dir" not in shown["export.py"]


@pytest.mark.e2e
def test_a_flag_hidden_from_help_is_still_accepted_where_it_must_match(trained_model, tmp_path, capsys,
                                                                      monkeypatch):
    """The Makefile passes one command line to every script: eval.py takes the model's flags, if they match."""
    import eval as evaluate
    _, flags = trained_model
    evaluate.main([*flags, "--hidden_units", "32", "--results_dir", str(tmp_path)])
    assert list(tmp_path.glob("model_epoch_*.json"))
    line = fails(evaluate.main, "eval.py", [*flags, "--hidden_units", "64"], capsys, monkeypatch)
    assert "hidden_units: 32 != 64" in line


@pytest.mark.e2e
def test_notes_go_to_stderr_and_a_full_stdout_is_one_line(trained_model, tmp_path, capsys):
    import translate
    _, flags = trained_model
    capsys.readouterr()
    translate.main([*flags, "--raw_weights", "eins zwei", "drei"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2  # two lines in, two out
    assert err.startswith("note: --raw_weights changes nothing")
    # every script's stdout, print()'s included, turns a full device into the same line (cli.GuardedStdout)
    for script, argv in (("translate.py", [*flags, "eins zwei"]), ("eval.py", flags),
                         ("prepro.py", [*flags, "--vocab_dir", str(tmp_path / "vocab")])):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, str(ROOT / script), *argv], cwd=tmp_path, stdout=full,
                                    stderr=subprocess.PIPE, text=True, timeout=300)
        assert result.returncode == 2, (script, result.stderr[-2000:])
        assert result.stderr.splitlines()[-1] == (f"{script}: error: cannot write the results to stdout (No space "
                                                  "left on device); free some space or redirect them elsewhere")


@pytest.mark.e2e
def test_a_user_mistake_prints_exactly_one_line_with_no_tensorflow_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # nothing set by hand
    result = subprocess.run([sys.executable, str(ROOT / "prepro.py"), "--source_train", "/nonexistent.de",
                             "--target_train", "/nonexistent.en", "--vocab_dir", tmp_path / "v"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and \
        result.stderr.startswith("prepro.py: error: /nonexistent.de not found")


def test_startup_filter_keeps_what_matters():
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1.0 2125 port.cc:153] oneDNN custom operations are on. You may see ...\n"
             "I0000 00:00:1.0 2125 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n"
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow ...\n")
    cuinit = "E0000 00:00:1.0 2137 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"
    no_driver = "I0000 00:00:1.0 2125 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
    assert cli.startup_lines_worth_showing(noise + no_driver + cuinit) == []  # no GPU here: no news
    assert cli.startup_lines_worth_showing(noise + cuinit) == [cuinit]  # a driver, yet no GPU: shown
    assert cli.startup_lines_worth_showing(noise + "E0000 something else broke") == ["E0000 something else broke"]


def test_every_field_is_a_typed_flag_with_help():
    explicit, _ = parse_args(["--maxlen", "7", "--lr", "0.5", "--sinusoid", "false",
                              "--logdir", "runs/a"], description="t")
    assert explicit == {"maxlen": 7, "lr": 0.5, "sinusoid": False, "logdir": "runs/a"}
    helps = cli._field_help()
    assert set(helps) == {f.name for f in dataclasses.fields(Hyperparams)}  # every field has a comment
    assert {group for group, _ in helps.values()} == {"data", "model", "training", "evaluation"}


def test_help_explains_empty_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"], description="t")
    out = " ".join(capsys.readouterr().out.split())
    assert "empty = from --dataset" in out and "(default: )" not in out
    assert "(default: iwslt2016)" in out


def test_script_flags_are_kept_apart():
    explicit, own = parse_args(["--all", "--maxlen", "5"], description="t",
                               add_arguments=lambda p: p.add_argument("--all", action="store_true",
                                                                      default=False))
    assert explicit == {"maxlen": 5} and own.all is True


@pytest.mark.parametrize("argv, message", [
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
    (["--maxlen", "ten"], "invalid int value: 'ten'"),
    (["--sinusoid", "maybe"], "expected true or false"),
    (["--preset", "fast"],
     "--preset 'fast' is unknown; choose one of original, multi30k_cpu, multi30k_cpu_long, multi30k_gpu"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, description="t")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_preset_fills_settings_under_the_flags_given():
    explicit, _ = parse_args(["--preset", "multi30k_cpu", "--num_epochs", "3"], description="t")
    hp = Hyperparams(**explicit)
    assert (hp.preset, hp.dataset, hp.vocab_type, hp.lr_schedule) == ("multi30k_cpu", "multi30k", "subword", "cosine")
    assert hp.num_epochs == 3  # the flag given wins over the preset's value
    assert parse_args(["--preset", "original"], description="t")[0] == {"preset": "original"}
    for name, values in hyperparams.PRESETS.items():
        Hyperparams(**values, preset=name)  # every preset is a valid set of settings


def test_the_long_preset_is_the_cpu_preset_longer_more_regularized_with_a_wider_beam():
    cpu, long = hyperparams.PRESETS["multi30k_cpu"], hyperparams.PRESETS["multi30k_cpu_long"]
    changed = {key for key in cpu.keys() | long.keys() if cpu.get(key) != long.get(key)}
    assert changed == {"num_epochs", "label_smoothing", "residual_dropout", "beam_size", "logdir"}  # model, rate
    assert long["logdir"] != Hyperparams.logdir  # a model of the other preset is not resumed or overwritten
    assert long["num_epochs"] > cpu["num_epochs"] and long["beam_size"] > cpu["beam_size"]
    assert long["label_smoothing"] > Hyperparams.label_smoothing and long["residual_dropout"] > cpu["residual_dropout"]


@pytest.mark.e2e
def test_a_failed_restore_is_the_last_line_without_tensorflow_s_warnings(trained_copy, tmp_path):
    directory, flags = trained_copy
    data = Path(flag(flags, "logdir")) / "model_epoch_02_gs_24.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # damaged
    result = run_script("eval.py", *flags, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and "is damaged" in result.stderr
    assert "WARNING" not in result.stderr

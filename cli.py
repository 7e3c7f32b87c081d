"""What every script shares: its command line, how it ends on a mistake or Ctrl-C, and TensorFlow's quiet start.

A user's mistake (a missing file, a wrong flag, a full disk) raises
UserError; run() prints it as the last line on stderr and exits with code 2.
Ctrl-C ends a script with `<script>: interrupted` and exit code 130 wherever
it lands, also while TensorFlow is still being imported. A script run by a
Python that lacks the project's packages says so in one line, exit code 2.
"""
import os
import signal
import sys


_stderr = [2]  # the file descriptor of the real stderr (import_tensorflow() captures 2 for a while)


def _interrupted_while_starting(number, frame):
    """Ctrl-C before run() took over (while modules are imported): nothing is written yet, so the process ends
    at once, with the one line run() would print."""
    os.write(_stderr[0], f"\n{os.path.basename(sys.argv[0])}: interrupted\n".encode())
    os._exit(130)  # the shell's code for a process ended by SIGINT


def _is_our_script(path):
    return os.path.dirname(os.path.realpath(path)) == os.path.dirname(os.path.realpath(__file__))


def _missing_module(kind, error, trace):
    """A script run by a Python without the project's packages (not its .venv's): one line, exit code 2."""
    if not issubclass(kind, ModuleNotFoundError):
        return sys.__excepthook__(kind, error, trace)
    sys.stdout.flush()
    print(f"{os.path.basename(sys.argv[0])}: error: {sys.executable} has no module {error.name!r}; install the "
          "project (python3 -m venv .venv && .venv/bin/pip install -e .) and run the script with .venv/bin/python",
          file=sys.stderr, flush=True)
    os._exit(2)


# First, before the imports that take time: a script of this project that is starting up.
if sys.argv and _is_our_script(sys.argv[0]):
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    sys.excepthook = _missing_module

import argparse
import contextlib
import gc
import inspect
import re
import tempfile
import threading
from dataclasses import fields

from hyperparams import PRESETS, Hyperparams
from messages import UserError


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _field_help():
    """Each field's trailing comment and the `# group` header above it in Hyperparams: {name: (group, help)},
    so that --help and the code agree."""
    found, group = {}, ""
    for line in inspect.getsource(Hyperparams).splitlines():
        header = re.fullmatch(r"    # (\w+)", line)
        field = re.match(r"^    (\w+): \w+ = .*?  # (.*)$", line)
        if header:
            group = header[1]
        elif field:
            found[field[1]] = (group, field[2])
    return found


def _parse_bool(text):
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


FROM_LOGDIR = ("The model's own settings come from LOGDIR/hparams.json. Every other setting of train.py is "
               "accepted too (so that one command line serves every script), but one that would change the "
               "model must equal its value there.")


def parse_args(argv, *, description, settings=None, add_arguments=None, epilog=None):
    """Parses `argv` into (settings given on the command line, the script's own flags).

    Every Hyperparams field is a flag; `settings` names those the script reads,
    which --help lists by group (None: all of them); the others are accepted
    but not listed. Only flags actually given appear in the first dict, so
    callers can tell an explicit `--maxlen 10` from the default; `--preset NAME`
    adds its PRESETS values there too, under the flags given.
    `add_arguments(parser)` adds flags that belong to one script (they must
    carry their own defaults).
    """
    parser = Parser(description=description, epilog=epilog, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    if add_arguments:
        add_arguments(parser)
    helps, groups = _field_help(), {}
    for f in fields(Hyperparams):
        group, text = helps.get(f.name, ("", ""))
        shown = settings is None or f.name in settings
        if shown and group not in groups:
            groups[group] = parser.add_argument_group(f"{group} settings")
        where = groups[group] if shown else parser
        where.add_argument(f"--{f.name}", type=_parse_bool if f.type is bool else f.type,
                           metavar=f.type.__name__.upper(),
                           help=(text + (f" (default: {f.default})" if f.default != "" else "")) if shown
                           else argparse.SUPPRESS)
    namespace = vars(parser.parse_args(argv))
    names = {f.name for f in fields(Hyperparams)}
    explicit = {k: v for k, v in namespace.items() if k in names}
    if "preset" in explicit:
        if explicit["preset"] not in PRESETS:
            parser.error(f"--preset {explicit['preset']!r} is unknown; choose one of {', '.join(PRESETS)}")
        explicit = {**PRESETS[explicit["preset"]], **explicit}
    own = argparse.Namespace(**{k: v for k, v in namespace.items() if k not in names})
    return explicit, own


def output(text):
    """Writes results to stdout (flushed): a full or failing stdout is a UserError, not a traceback."""
    sys.stdout.write(text)
    sys.stdout.flush()


class GuardedStdout:
    """sys.stdout while a script runs (run()): every write to it, print()'s too, turns a full or failing
    stdout into a UserError; a reader that went away stays a BrokenPipeError, which run() ends quietly."""

    def __init__(self, stream):
        self.stream = stream

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            _silence_stdout()
            raise UserError(f"cannot write the results to stdout ({e.strerror or e}); free some space or "
                            "redirect them elsewhere") from None

    def write(self, text):
        return self._guarded(self.stream.write, text)

    def flush(self):
        return self._guarded(self.stream.flush)

    def __getattr__(self, name):  # fileno, isatty, encoding, buffer, ...: the stream's own
        return getattr(self.stream, name)


def _silence_stdout():
    """Points stdout at /dev/null, so that the interpreter's last flush at exit has nothing to fail on."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _end_output_of_libraries():
    """Makes the error line the last on stderr, on a line of its own: progress bars still open are ended, and
    TensorFlow's warnings about checkpoint values never restored, which come when their objects are collected
    (at exit), are silenced and collected now."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", [])):
            bar.close()
    tf = sys.modules.get("tensorflow")
    if tf is not None and hasattr(tf, "get_logger"):
        tf.get_logger().setLevel("ERROR")
        gc.collect()
    sys.stderr.flush()


def run(main):
    """Runs a script's main(): a UserError becomes one line on stderr and exit code 2.

    Ctrl-C ends it with one line too (the files it writes are complete or
    absent either way), and so does a reader of its output going away
    (`translate.py ... | head`), quietly. Once main() is over, Ctrl-C is
    ignored: the script is only exiting.
    """
    script = os.path.basename(sys.argv[0])
    original, sys.stdout = sys.stdout, GuardedStdout(sys.stdout)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from now on, Ctrl-C is a KeyboardInterrupt
    try:
        main(sys.argv[1:])
        output("")  # a full stdout fails here, not at exit
    except UserError as e:
        _end_output_of_libraries()
        print(f"{script}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        _end_output_of_libraries()
        print(f"\n{script}: interrupted", file=sys.stderr)
        code = 130  # the shell's code for a process ended by SIGINT
    except BrokenPipeError:
        _silence_stdout()  # no second error at exit's flush
        code = 1
    else:
        code = 0
    sys.stdout = original
    if main_thread:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code:
        sys.exit(code)


# TensorFlow's start-up lines that say nothing to a user: they come before absl's
# logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot silence them.
STARTUP_NOISE = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations are on|"
                           r"Could not find cuda drivers|cpu_feature_guard|^To enable the following instructions")
NO_CUDA_DRIVER = "Could not find cuda drivers"  # then cuInit's failure is certain, and no news
CUINIT_FAILED = "failed call to cuInit"


def startup_lines_worth_showing(text):
    """The lines of TensorFlow's start-up output that are news to a user (see import_tensorflow)."""
    no_driver = NO_CUDA_DRIVER in text
    return [line for line in text.splitlines()
            if not (STARTUP_NOISE.search(line) or (no_driver and CUINIT_FAILED in line))]


@contextlib.contextmanager
def _ending_on_ctrl_c():
    """Within `with` (an import that must not be interrupted half way), Ctrl-C ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def import_tensorflow():
    """Imports TensorFlow and lists its devices with stderr captured, then passes on what matters.

    Dropped: the start-up lines in STARTUP_NOISE, and the failure of cuInit on
    a machine where TensorFlow found no CUDA driver at all. Kept: everything
    else, such as cuInit failing where a driver exists (a GPU was expected).
    Later messages follow TF_CPP_MIN_LOG_LEVEL (default here: 2, errors only).
    Scripts call this before importing any module that imports TensorFlow.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured, _ending_on_ctrl_c():
        os.dup2(captured.fileno(), 2)  # the file descriptor: TensorFlow's C++ code writes there directly
        _stderr[0] = stderr  # where a Ctrl-C meanwhile says so
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # where cuInit runs; it leaves logical devices configurable
        finally:
            os.dup2(stderr, 2)
            _stderr[0] = 2
            os.close(stderr)
            captured.seek(0)
            kept = startup_lines_worth_showing(captured.read().decode("utf-8", "replace"))
            if kept:
                print("\n".join(kept), file=sys.stderr)

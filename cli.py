"""What every script shares: one-line errors, files written whole or not at all, a quiet TensorFlow start-up.

A user's mistake (a missing file, a wrong flag, a full disk) raises
UserError; run() prints it as one line on stderr and exits with code 2.
Outputs go to a temporary name first and are renamed into place only once
complete, so that no reader ever sees half a file, or a new file beside an old
one it belongs with.
"""
import argparse
import hashlib
import os
import re
import sys
import tempfile


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main):
    """Runs a script's main(); a UserError becomes one line on stderr and exit code 2.

    Ctrl-C ends it with one line too (the files it writes are complete or
    absent either way), and so does a reader of its output going away
    (`translate.py ... | head`), quietly.
    """
    script = os.path.basename(sys.argv[0])
    try:
        main(sys.argv[1:])
    except UserError as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{script}: interrupted", file=sys.stderr)
        sys.exit(130)  # the shell's code for a process ended by SIGINT
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        sys.exit(1)


def write_files(contents, written=None):
    """Writes {path: text or bytes} so that a reader sees either every new file or every old one.

    Each file is written in full to a temporary name beside it first; that is
    where a full disk or a kill strikes, and it leaves the old files untouched.
    Only when all are complete are they renamed into place, in the order given
    (so a manifest that vouches for the others goes last), after the files of
    `written` ({path: its complete temporary file}, for files too large to hold
    in memory). A failure removes the temporary files and becomes a UserError
    naming the file.
    """
    temporary, path = dict(written or {}), None
    try:
        for path, content in contents.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            temporary[path] = f"{path}.tmp{os.getpid()}"
            with open(temporary[path], "wb") as f:
                f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it visible
        for path, tmp in temporary.items():
            os.replace(tmp, path)
    except OSError as e:  # a full disk, a read-only directory, a directory where the file should be
        raise UserError(f"cannot write {path} ({e.strerror or e}); free some space or choose another "
                        "directory (nothing was changed)") from None
    finally:
        for tmp in temporary.values():
            discard(tmp)


def write_atomic(path, content):
    """Writes text or bytes to `path` through a temporary file, so that no reader ever sees half of it."""
    write_files({path: content})


def file_digest(*paths, algorithm="sha256"):
    """Hex digest of the files' contents, one after the other."""
    digest = hashlib.new(algorithm)
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def discard(path):
    """Deletes the file at `path` if there is one (a temporary file of the script's own)."""
    if os.path.exists(path):
        os.remove(path)


def checksum_ok(path, checksum):
    """Whether the file's digest equals `checksum` ("sha256:<hex>" or "md5:<hex>")."""
    algorithm, expected = checksum.split(":")
    return file_digest(path, algorithm=algorithm) == expected


def check_writable(directory, flag):
    """Fails early, before hours of work, if `directory` cannot be created or written to.

    Leaves no trace: directories it had to create for the test are removed again.
    """
    created, parent = [], os.path.abspath(directory)
    while not os.path.exists(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    probe = os.path.join(directory, f".write_test{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
    except OSError as e:
        raise UserError(f"cannot write to --{flag} {directory} ({e.strerror or e}); choose another "
                        f"--{flag}, or free space or fix permissions there") from None
    finally:
        discard(probe)  # also when a full disk let it be created but not written
        for path in created:  # deepest first
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)


def inside(path, directory):
    """Whether `path` is `directory` or lies inside it (both resolved through symbolic links)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


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
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)  # the file descriptor: TensorFlow's C++ code writes there directly
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # where cuInit runs; it leaves logical devices configurable
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
            captured.seek(0)
            kept = startup_lines_worth_showing(captured.read().decode("utf-8", "replace"))
            if kept:
                print("\n".join(kept), file=sys.stderr)

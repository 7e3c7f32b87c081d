"""Files: written whole or not at all, digests, writability, temporary files a kill left, JSON records checked.

Outputs go to a temporary name beside them first and are renamed into place
only once complete, so that no reader ever sees half a file, or a new file
beside an old one it belongs with. A path that is a symbolic link is written
through to its target (atomically there); a device, FIFO or socket is written
to directly, as a shell redirection would; a directory is refused.

The JSON files the project writes and reads back (hparams.json, best.json,
corpus.json, manifest.json, export.json) are read through read_record(),
which checks each one as a whole against the shape its owner declares.
"""
import hashlib
import json
import os
import re
import shutil
import stat

from messages import UserError


def temporary_name(path):
    """Where `path` is written before it is renamed into place: beside it, named after this process."""
    return f"{path}.tmp{os.getpid()}"


def _destination(path):
    """How `path` is written: ("replace", the real path: a regular file, a new path, or a symbolic link's
    target) or ("direct", path: a device, FIFO or socket, written in place); a directory is refused."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return "replace", real
    if stat.S_ISDIR(mode):
        raise UserError(f"{path} is a directory; pass the name of a file to write")
    return ("replace", real) if stat.S_ISREG(mode) else ("direct", path)


def _encoded(content):
    return content if isinstance(content, bytes) else content.encode("utf-8")


def write_files(contents, written=None):
    """Writes {path: text or bytes} so that a reader sees either every new file or every old one.

    Each regular file is written in full to a temporary name beside it first;
    that is where a full disk or a kill strikes, and it leaves the old files
    untouched. Only when all are complete are they renamed into place, in the
    order given (so a manifest that vouches for the others goes last), after
    the files of `written` ({path: its complete temporary file}, for files too
    large to hold in memory). Devices and FIFOs are written last, directly. A
    failure removes the temporary files and becomes a UserError naming the file;
    an existing file keeps its permissions.
    """
    temporary, direct, path, replaced = dict(written or {}), {}, None, False
    try:
        for path, content in contents.items():
            how, target = _destination(path)
            if how == "direct":
                direct[path] = _encoded(content)
                continue
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            temporary[target] = temporary_name(target)
            with open(temporary[target], "wb") as f:
                f.write(_encoded(content))
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename makes it visible
            if os.path.exists(target):
                os.chmod(temporary[target], stat.S_IMODE(os.stat(target).st_mode))
        for path, tmp in temporary.items():
            os.replace(tmp, path)
            replaced = True
        for path, data in direct.items():
            with open(path, "wb") as f:
                f.write(data)
    except OSError as e:  # a full disk or device, a read-only directory, a directory where the file should be
        kept = "" if replaced else " (nothing was changed)"
        raise UserError(f"cannot write {path} ({e.strerror or e}); free some space or choose another "
                        f"path{kept}") from None
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


def checksum_ok(path, checksum):
    """Whether the file's digest equals `checksum` ("sha256:<hex>" or "md5:<hex>")."""
    algorithm, expected = checksum.split(":")
    return file_digest(path, algorithm=algorithm) == expected


def discard(path):
    """Deletes the file at `path` if there is one (a temporary file of the script's own)."""
    if os.path.lexists(path):
        os.remove(path)


def process_alive(pid):
    """Whether a process with this id runs (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(directory, names):
    """Deletes the temporary files (or directories, as export.py writes) `<name>.tmp<pid>` in `directory`
    whose process is gone (killed while writing): those whose <name> matches the regular expression `names`.
    Returns how many."""
    removed = 0
    if not os.path.isdir(directory):
        return removed
    pattern = re.compile(rf"(?:{names})\.tmp(\d+)")
    for entry in os.listdir(directory):
        match = pattern.fullmatch(entry)
        if match and not process_alive(int(match[1])):
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                discard(path)
            removed += 1
    return removed


def check_writable(directory, flag):
    """Fails early, before hours of work, if `directory` cannot be created or written to.

    Leaves no trace: directories it had to create for the test are removed again.
    """
    created, parent = [], os.path.abspath(directory)
    while not os.path.lexists(parent):
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


# Record shapes, for read_record(): a type (float also takes an int), a tuple of alternatives
# (None among them: null allowed), [shape] for a list of items of that shape, {key: shape}
# for an object with those keys (a key ending in "?" may be missing; other keys may be
# there), and {str: shape} for an object whose every value has the shape.

def shape_problem(value, shape, where="the file"):
    """What in `value` does not have `shape`, in a few words ("shards[2].bytes is missing"), or None."""
    if isinstance(shape, tuple):
        problems = [shape_problem(value, alternative, where) for alternative in shape]
        return None if None in problems else problems[0]
    if shape is None:
        return None if value is None else f"{where} is not null"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        return next(filter(None, (shape_problem(v, shape[0], f"{where}[{i}]") for i, v in enumerate(value))), None)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where} is not an object"
        if list(shape) == [str]:
            return next(filter(None, (shape_problem(v, shape[str], f"{where}.{k}") for k, v in value.items())), None)
        for key, inner in shape.items():
            name = key.removesuffix("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{where}.{name} is missing" if where != "the file" else f"{name} is missing"
            problem = shape_problem(value[name], inner, name if where == "the file" else f"{where}.{name}")
            if problem:
                return problem
        return None
    allowed = (int, float) if shape is float else shape
    if isinstance(value, bool) != (shape is bool) or not isinstance(value, allowed):
        kind = {float: "a number", int: "an integer"}.get(shape, f"a {getattr(shape, '__name__', shape)}")
        return f"{where} is not {kind}"
    return None


MAX_JSON_DEPTH = 32  # of every JSON document the project reads: its own records, requests, benchmark lines


class TooDeep(ValueError):
    """JSON whose arrays and objects nest more than MAX_JSON_DEPTH deep."""


def parse_json(text):
    """JSON text (str or UTF-8 bytes) -> its value; ValueError if it is not JSON or nests arrays and objects
    more than MAX_JSON_DEPTH deep (Python's parser would otherwise recurse until RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        deep = True
    else:
        deep = _depth(value) > MAX_JSON_DEPTH
    if deep:
        raise TooDeep(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value):
    """How deep arrays and objects nest in a parsed JSON value (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in children)
    return deepest


def read_record(path, shape, fix=None):
    """The JSON record in `path` if it has `shape`, or None if there is no such file.

    A damaged file (unreadable, not UTF-8 JSON, or not of that shape) is a
    UserError naming the file, what is wrong and `fix`; with fix None it is
    taken for absent (None) instead: its caller writes it anew.
    """
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = parse_json(f.read())
        problem = shape_problem(record, shape)
    except TooDeep as e:
        problem = str(e)
    except (OSError, ValueError) as e:  # a directory, unreadable, not UTF-8, not JSON
        problem = getattr(e, "strerror", None) or f"not JSON: {str(e)[:80]}"
    if problem is None:
        return record
    if fix is None:
        return None
    raise UserError(f"{path} is damaged ({problem}); {fix}")

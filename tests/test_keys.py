"""serving/keys.py: the --api_keys file (one-line errors naming the line), constant-time lookup, limits per minute
with the seconds to wait."""
import math

import pytest

from messages import UserError
from serving.keys import read_keys

A, B = "a" * 16 + "-team_A", "0123456789abcdef"


def keys_file(tmp_path, text):
    path = tmp_path / "keys.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_keys_with_and_without_limits_comments_and_blank_lines(tmp_path):
    keys = read_keys(keys_file(tmp_path, f"# operators\n\n{A}  requests_per_minute=2 characters_per_minute=50  # A\n"
                                         f"{B}\n"))
    first, second = keys.find(A), keys.find(B)
    assert (first.line, first.requests_per_minute, first.characters_per_minute) == (3, 2, 50)
    assert (second.line, second.requests_per_minute, second.characters_per_minute) == (4, 0, 0)
    assert first.name == "key on line 3" and A not in repr(first)  # the key itself is kept only as a digest
    assert keys.find(A[:-1]) is None and keys.find("") is None and keys.find(A + " ") is None


@pytest.mark.parametrize("text, words", [
    ("short\n", "line 1: a key must be 16 to 256"),
    (f"{A}\n{A}\n", "line 2: the same key as line 1"),
    (f"{A} requests_per_minute=0\n", "line 1: 'requests_per_minute=0' is not a limit"),
    (f"{A} per_hour=5\n", "'per_hour=5' is not a limit"),
    (f"{A} requests_per_minute=-1\n", "is not a limit"),
    ("# nothing\n\n", "holds no key"),
])
def test_a_bad_keys_file_is_a_one_line_error_naming_its_line(tmp_path, text, words):
    path = keys_file(tmp_path, text)
    with pytest.raises(UserError, match=words) as error:
        read_keys(path)
    assert path in str(error.value) and "\n" not in str(error.value)


def test_a_keys_file_that_is_missing_or_not_utf8(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_keys(str(tmp_path / "absent.txt"))
    (tmp_path / "latin1.txt").write_bytes(f"{A}\n".encode() + b"\xe4" * 20 + b"\n")
    with pytest.raises(UserError, match="line 2: not UTF-8"):
        read_keys(str(tmp_path / "latin1.txt"))


def test_requests_per_minute_and_the_wait_until_the_oldest_leaves(tmp_path):
    key = read_keys(keys_file(tmp_path, f"{A} requests_per_minute=2\n")).find(A)
    assert key.admit(10, now=0.0) is None and key.admit(10, now=20.0) is None
    assert key.admit(10, now=30.0) == (30, "requests_per_minute")  # the first leaves the minute at 60 s
    assert key.admit(10, now=60.5) is None  # it has left
    assert key.admit(10, now=61.0) == (19, "requests_per_minute")


def test_characters_per_minute(tmp_path):
    key = read_keys(keys_file(tmp_path, f"{A} characters_per_minute=100\n")).find(A)
    assert key.admit(60, now=0.0) is None and key.admit(30, now=10.0) is None
    assert key.admit(20, now=15.0) == (45, "characters_per_minute")  # once the 60 of t=0 have left
    assert key.admit(10, now=15.0) is None  # what still fits goes on
    assert key.admit(101, now=15.0) == (math.inf, "characters_per_minute")  # never fits: no wait helps

"""API keys and their limits (serve.py --api_keys FILE).

The file holds one key a line, optionally followed by its limits; blank lines
and lines starting with # are skipped:

    # KEY                              [requests_per_minute=N] [characters_per_minute=N]
    3f9a6c0d1b7e4e2a9c55d8e1f0a2b4c6   requests_per_minute=60 characters_per_minute=20000
    team-b-7d1c2e0f9a8b                # no limits

A key is at least 16 characters of letters, digits, '-' and '_' (python -c
"import secrets; print(secrets.token_hex(16))" makes one). A request gives it
as `Authorization: Bearer KEY` or as LibreTranslate's `api_key` field. Keys are
compared in constant time (the digest of the key given against every key's),
and the log names a key by its line in the file, never by the key itself.
A limit counts over the last 60 seconds: beyond it, 429 with Retry-After,
the seconds until the oldest request counted leaves the minute.
"""
import collections
import dataclasses
import hashlib
import hmac
import math
import os
import re
import time

from messages import UserError
from serving.requests import BadRequest

KEY = re.compile(r"[A-Za-z0-9_-]{16,256}")
LIMITS = ("requests_per_minute", "characters_per_minute")
WINDOW = 60.0  # seconds


@dataclasses.dataclass
class Key:
    line: int  # where the key is in the file: how the log names it
    digest: bytes  # sha256 of the key
    requests_per_minute: int = 0  # 0: no limit
    characters_per_minute: int = 0
    seen: collections.deque = dataclasses.field(default_factory=collections.deque)  # (time, characters)

    @property
    def name(self):
        return f"key on line {self.line}"

    def admit(self, characters, now=None):
        """Counts a request of `characters` against the key's limits: None if it may go on, or the seconds to
        wait (for Retry-After) and which limit it reached."""
        now = time.monotonic() if now is None else now
        while self.seen and self.seen[0][0] <= now - WINDOW:
            self.seen.popleft()
        if self.requests_per_minute and len(self.seen) + 1 > self.requests_per_minute:
            return self.wait(now, 1, lambda entry: 1, self.requests_per_minute), "requests_per_minute"
        used = sum(count for _, count in self.seen)
        if self.characters_per_minute and used + characters > self.characters_per_minute:
            if characters > self.characters_per_minute:  # could never pass: not a matter of waiting
                return math.inf, "characters_per_minute"
            return self.wait(now, characters, lambda entry: entry[1], self.characters_per_minute), \
                "characters_per_minute"
        self.seen.append((now, characters))
        return None

    def wait(self, now, wanted, size, limit):
        """Seconds until enough of the minute's entries have left it for `wanted` more within `limit`."""
        total = sum(size(entry) for entry in self.seen)
        for when, count in self.seen:
            total -= size((when, count))
            if total + wanted <= limit:
                return max(1, math.ceil(when + WINDOW - now))
        return math.ceil(WINDOW)


def digest(key):
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class Keys:
    """The keys of an --api_keys file."""

    def __init__(self, keys):
        self.keys = keys

    def identify(self, request, given=None):
        """The Key of a request: Authorization: Bearer KEY, or `given` (LibreTranslate's api_key field); 401
        without one, 403 for one not in the file. The log line names it by its line (request.state.key)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" and token.strip() else given
        if not given:
            raise BadRequest(401, "api_key", "is missing: this server needs an API key, sent as Authorization: "
                             "Bearer KEY (or as LibreTranslate's api_key field)",
                             headers={"WWW-Authenticate": "Bearer"})
        key = self.find(given)
        if key is None:
            raise BadRequest(403, "api_key", "is not a key of this server; ask its operator for one")
        request.state.key = key.name
        return key

    @staticmethod
    def admit(key, characters):
        """Counts a request of `characters` against the key's limits per minute: 429 with Retry-After beyond
        them, 413 for more characters than a minute allows at all."""
        refused = key.admit(characters)
        if refused is None:
            return
        wait, limit = refused
        most = getattr(key, limit)
        if wait == math.inf:
            raise BadRequest(413, "text", f"has {characters:,} characters, more than this key's {limit} {most:,}: "
                             "send less at a time", most)
        raise BadRequest(429, None, f"this key's {limit} ({most:,}) is reached; retry in {wait} s", most,
                         headers={"Retry-After": str(wait)})

    def find(self, given):
        """The Key for the key a request gave, or None: every key compared, in constant time."""
        wanted, found = digest(given), None
        for key in self.keys:
            if hmac.compare_digest(wanted, key.digest):
                found = key
        return found


def read_keys(path):
    """An --api_keys file -> Keys, or a one-line error naming the file, the line and the fix."""
    if not os.path.isfile(path):
        raise UserError(f"--api_keys {path}: no such file; write the keys in a text file, one a line")
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"--api_keys {path}: cannot be read ({e.strerror}); check the file's permissions") from None
    keys, seen = [], {}
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise UserError(f"{path}, line {number}: not UTF-8; keys are plain ASCII text") from None
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}, line {number}"
        if not KEY.fullmatch(fields[0]):
            raise UserError(f"{where}: a key must be 16 to 256 letters, digits, '-' or '_' (this one is "
                            f"{len(fields[0])} characters); make one with: python -c \"import secrets; "
                            "print(secrets.token_hex(16))\"")
        if fields[0] in seen:
            raise UserError(f"{where}: the same key as line {seen[fields[0]]}; give each key once")
        seen[fields[0]] = number
        limits = {}
        for field in fields[1:]:
            name, _, value = field.partition("=")
            if name not in LIMITS or not value.isdigit() or int(value) < 1:
                raise UserError(f"{where}: {field!r} is not a limit; write {LIMITS[0]}=N or {LIMITS[1]}=N "
                                "with N a whole number of at least 1, after the key")
            limits[name] = int(value)
        keys.append(Key(number, digest(fields[0]), **limits))
    if not keys:
        raise UserError(f"{path} holds no key; write one key a line (see serve.py --help)")
    return Keys(keys)

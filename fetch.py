"""Resumable downloads over HTTP: retries with growing waits, Range requests, Google Drive's confirmation page.

A file is fetched into <name>.part and renamed to its name only once it is
complete and (when a checksum is known) verified, so a destination never
holds half a file, not even after a failure or Ctrl-C.
"""
import html.parser
import http.client
import http.cookiejar
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

from files import checksum_ok, discard

TIMEOUT = 30  # seconds of silence before a connection counts as failed


class FetchError(Exception):
    """An address that cannot deliver the file; trying it again would not help."""


class _Cut(Exception):
    """The connection ended early; the next attempt resumes where it stopped."""


# Drive answers large files with a "cannot scan for viruses" page whose form
# (or, formerly, link) leads to the file; cookies are kept for the second request.
_OPENER = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
_OPENER.addheaders = [("User-Agent", "transformer-de-en-download/0.1")]


class _ConfirmationPage(html.parser.HTMLParser):
    """Collects the first form's action and hidden fields, and any link carrying confirm=."""

    def __init__(self):
        super().__init__()
        self.action, self.fields, self.link = None, {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action")
        elif tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""
        elif tag == "a" and "confirm=" in (attrs.get("href") or "") and self.link is None:
            self.link = attrs["href"]


def confirmation_url(page, url):
    """The address a download-warning page at `url` confirms to, or None for any other page."""
    parser = _ConfirmationPage()
    parser.feed(page.decode("utf-8", "replace"))
    if parser.action and "confirm" in parser.fields:
        return urllib.parse.urljoin(url, parser.action) + "?" + urllib.parse.urlencode(parser.fields)
    return urllib.parse.urljoin(url, parser.link) if parser.link else None


def _download_once(url, part, desc, confirmations=1):
    """One attempt: appends the rest of `url` to `part` (restarting if the server ignores Range)."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = _OPENER.open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part is whole, the checksum decides
            return
        raise
    with response:
        if response.headers.get_content_type() == "text/html":  # never the file we want
            next_url = confirmation_url(response.read(1 << 20), response.url) if confirmations else None
            if not next_url:
                raise FetchError("served a web page instead of the file")
            return _download_once(next_url, part, desc, confirmations - 1)
        if have and response.status != 206:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                     leave=False) as bar:
            while chunk := response.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))
    size = os.path.getsize(part)
    if total is not None and size < total:
        raise _Cut(f"connection closed after {size} of {total} bytes")


def fetch(url, part, *, retries, wait, desc):
    """Downloads `url` into `part`, retrying with backoff; raises FetchError with the last reason."""
    for attempt in range(1, retries + 1):
        try:
            return _download_once(url, part, desc)
        except urllib.error.HTTPError as e:
            reason = f"HTTP {e.code} {e.reason}"
            if e.code < 500 and e.code != 429:  # the address is wrong, not busy
                raise FetchError(reason) from None
        except (_Cut, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = str(getattr(e, "reason", "") or e) or type(e).__name__
        if attempt < retries:
            delay = wait * 2 ** (attempt - 1)
            tqdm.write(f"{url}: {reason}; attempt {attempt + 1} of {retries} in {delay:g} s")
            time.sleep(delay)
    raise FetchError(reason)


def obtain(dest, sources, *, retries, wait):
    """Fetches `dest` from the first (url, checksum or None) source that delivers a verified file.

    Returns the failures as "url: reason" strings (empty on success). Whatever
    happens, no `dest.part` is left behind.
    """
    part, failures = dest + ".part", []
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    for url, checksum in sources:
        try:
            fetch(url, part, retries=retries, wait=wait, desc=os.path.basename(dest))
            if checksum and not checksum_ok(part, checksum):
                raise FetchError(f"checksum mismatch, not the expected file ({checksum})")
            os.replace(part, dest)
            print(f"{dest}: fetched from {url}" + (", checksum ok" if checksum else ""))
            return []
        except FetchError as e:
            failures.append(f"{url}: {e}")
        finally:
            discard(part)
    return failures

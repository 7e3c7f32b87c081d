"""Fetches a preset corpus into corpora/: python download.py iwslt2016 | multi30k.

Every file is checked against a known checksum before it is used. Downloads
go to `<name>.part`, are resumed after a cut connection, and are renamed only
once they verify, so corpora/ never holds half a file, not even after a
failure or Ctrl-C. Files already present and verified are not fetched again.

    python download.py multi30k --mirror https://example.org/multi30k/   # or $CORPUS_MIRROR
    python download.py iwslt2016 --from ~/Downloads                      # files fetched by hand
"""
import html.parser
import http.client
import http.cookiejar
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

from tqdm import tqdm

from cli import Parser, UserError, file_digest, run
from hyperparams import CORPORA, DATASETS, PRESETS, Hyperparams, corpus_paths


MIRROR_ENV = "CORPUS_MIRROR"
TIMEOUT = 30  # seconds of silence before a connection counts as failed

# Multi30k task 1, raw text, from the dataset's repository. A mirror must hold
# the files under the same relative path, <base>data/task1/raw/train.de.gz.
MULTI30K_BASES = ("https://raw.githubusercontent.com/multi30k/dataset/master/",
                  "https://github.com/multi30k/dataset/raw/master/")
MULTI30K_DIR = "data/task1/raw/"
# sha256 where it was computed from a copy of the file (whose md5 also equals the
# published one); the published md5 (torchtext, sacrebleu) for the other files.
MULTI30K_CHECKSUMS = {
    "train.de.gz": "sha256:726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "sha256:d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de.gz": "sha256:f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "sha256:14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de.gz": "sha256:9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "sha256:611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2017_flickr.de.gz": "md5:6a8d5c87f6ae19e3d35681aa6fd16571",
    "test_2017_flickr.en.gz": "md5:005396bac545d880abe6f00bbb7dbbb4",
    "test_2018_flickr.de.gz": "md5:87e00327083dd69feaa029a8f7c1a047",
    "test_2018_flickr.en.gz": "md5:a152878809942757a55ce087073486b8",
    "test_2017_mscoco.de.gz": "md5:e8cd6ec2bc8a11fc846fa48a46e3d0bb",
    "test_2017_mscoco.en.gz": "md5:a7b684e0edbef1d4a23660c8e8e743fd",
}
MULTI30K_NEEDED = ("train", "val", "test_2016_flickr")  # the preset's own splits; --from must have them

# IWSLT 2016: the campaign archive 2016-01.tgz holds texts/de/en/de-en.tgz, which
# holds de-en/<the files>. WIT3 served the inner archive by itself (no published
# checksum: its files are checked instead); a Google Drive copy of the whole
# archive, the one torchtext uses, is checked by its md5. A mirror may hold either,
# as <base>texts/de/en/de-en.tgz or <base>2016-01.tgz.
IWSLT_PAIR = "texts/de/en/de-en.tgz"
IWSLT_WHOLE = "2016-01.tgz"
IWSLT_WHOLE_MD5 = "md5:c393ed3fc2a1b0f004b3331043f615ae"
IWSLT_SOURCES = (  # (address, checksum of what it serves, file name while it is unpacked)
    ("https://wit3.fbk.eu/archive/2016-01/" + IWSLT_PAIR, None, "de-en.tgz"),
    ("https://drive.google.com/uc?export=download&id=1l5y6Giag9aRPwGtuZHswh3w5v3qEz8D8", IWSLT_WHOLE_MD5,
     IWSLT_WHOLE),
)
# sha256 of the released dev and test files, computed from copies of them. The
# training text and tst2014 have no known checksum outside the whole archive.
IWSLT_CHECKSUMS = {
    "IWSLT16.TED.dev2010.de-en.de.xml": "sha256:669c478b2c76f8457fb78f87fd3a6db2d84d47bb635b178bcd7233facb20fd00",
    "IWSLT16.TED.dev2010.de-en.en.xml": "sha256:6c65bd89a391a0c3ce855e04169b05eba49a40c9189149dd60a20b62ad51bcb1",
    "IWSLT16.TED.tst2010.de-en.de.xml": "sha256:26a5f366f2f90c05f39f32f4923cde7ef40cc1d91701630912c95486197fc264",
    "IWSLT16.TED.tst2010.de-en.en.xml": "sha256:39861d2c211341aa83664c153a307489aa4b57408ec2c59cfcb1adb10c7786d0",
    "IWSLT16.TED.tst2011.de-en.de.xml": "sha256:9ea773ecd3235ed60c7b24a9ed0a78360ebf3c433e1a04f8793ce5cacd343abf",
    "IWSLT16.TED.tst2011.de-en.en.xml": "sha256:f722f875a666c536c2bc905fd808ee9eb435dd7ba33bdd6f7596992dd9c0c6e3",
    "IWSLT16.TED.tst2012.de-en.de.xml": "sha256:f020f769a8e63a91990ff89ea6f40f7416d32bd8f331fe3cc2bc4137b5c99ef0",
    "IWSLT16.TED.tst2012.de-en.en.xml": "sha256:d6afe2c04f84833ecdb293fe9b8ad7ad87b1a04d1397106cb3fb14aa8d788555",
    "IWSLT16.TED.tst2013.de-en.de.xml": "sha256:5b74a7292fcb8f71cf6de9bcf9c9a24b87ab2904fd8c4b73c1e81f353f79b407",
    "IWSLT16.TED.tst2013.de-en.en.xml": "sha256:479fec5ca4c5e8b8fe7932f639909d925987a9fb37db17e425aacf64707c70bb",
}


class FetchError(Exception):
    """An address that cannot deliver the file; trying it again would not help."""


class _Cut(Exception):
    """The connection ended early; the next attempt resumes where it stopped."""


def checksum_ok(path, checksum):
    """Whether the file's digest equals `checksum` ("sha256:<hex>" or "md5:<hex>")."""
    algorithm, expected = checksum.split(":")
    return file_digest(path, algorithm=algorithm) == expected


def _remove(path):
    if os.path.exists(path):
        os.remove(path)


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
            _remove(part)
    return failures


def copy_verified(source, dest, checksum):
    """Copies a file the user downloaded into place, through dest.part, if its checksum matches."""
    if not checksum_ok(source, checksum):
        raise UserError(f"{source} is not the published file (its checksum differs from {checksum}); "
                        "download it again")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    try:
        shutil.copyfile(source, dest + ".part")
        os.replace(dest + ".part", dest)
    finally:
        _remove(dest + ".part")
    print(f"{dest}: copied from {source}, checksum ok")


def present(path, checksum):
    """Whether `path` is there and (when a checksum is known) verifies; says so when it does not."""
    if not os.path.isfile(path):
        return False
    if checksum and not checksum_ok(path, checksum):
        print(f"{path}: checksum differs from {checksum}; fetching it again")
        return False
    return True


def multi30k(args):
    """Fetches (or imports with --from) each Multi30k file that is not already in place."""
    bases = [args.mirror] if args.mirror else MULTI30K_BASES
    skipped = []
    for split in ("train", *DATASETS["multi30k"]["splits"]):
        for dest in corpus_paths("multi30k", split):
            name = os.path.basename(dest)
            checksum = MULTI30K_CHECKSUMS[name]
            if present(dest, checksum):
                print(f"{dest}: already present, checksum ok")
            elif args.source_dir:
                found = [p for p in (os.path.join(args.source_dir, MULTI30K_DIR, name),
                                     os.path.join(args.source_dir, name)) if os.path.isfile(p)]
                if found:
                    copy_verified(found[0], dest, checksum)
                elif split in MULTI30K_NEEDED:
                    raise UserError(f"{name} is not in --from {args.source_dir}; put the Multi30k files "
                                    f"there (from {MULTI30K_BASES[0]}{MULTI30K_DIR})")
                else:
                    skipped.append(name)
            else:
                failures = obtain(dest, [(base + MULTI30K_DIR + name, checksum) for base in bases],
                                  retries=args.retries, wait=args.retry_wait)
                if failures:
                    raise UserError(f"could not fetch {name} ({'; '.join(failures)}); download the files "
                                    f"under {MULTI30K_DIR} of https://github.com/multi30k/dataset by hand "
                                    f"into {os.path.dirname(dest)}/, or into DIR and run "
                                    f"python download.py multi30k --from DIR")
    if skipped:
        print(f"not in {args.source_dir}, so skipped: {', '.join(skipped)} (optional test splits)")


def _archive_members(archive):
    """Yields (file name, readable file) for each file in de-en.tgz, or in de-en.tgz inside 2016-01.tgz."""
    try:
        with tarfile.open(archive) as tar:
            inner = next((m for m in tar if m.isfile() and m.name.endswith(IWSLT_PAIR)), None)
            if inner:
                with tarfile.open(fileobj=tar.extractfile(inner)) as pair:
                    yield from ((os.path.basename(m.name), pair.extractfile(m)) for m in pair if m.isfile())
            else:
                yield from ((os.path.basename(m.name), tar.extractfile(m)) for m in tar if m.isfile())
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{archive} is not a readable IWSLT archive ({e}); download it again") from None


def _directory_members(directory):
    """Yields (file name, readable file) for the files of an unpacked de-en.tgz (in DIR or DIR/de-en)."""
    for folder in (directory, os.path.join(directory, "de-en")):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if os.path.isfile(os.path.join(folder, name)):
                    with open(os.path.join(folder, name), "rb") as f:
                        yield name, f


def install(members, wanted, origin, *, check_files):
    """Writes the wanted files (name -> destination) from `members`: all of them, or none.

    Each goes to <destination>.part first; only when every file is there (and,
    with check_files, matches its known checksum) are they renamed into place.
    """
    parts = {}
    os.makedirs(CORPORA, exist_ok=True)
    try:
        for name, source in members:
            if name in wanted and name not in parts:
                parts[name] = wanted[name] + ".part"
                try:
                    with open(parts[name], "wb") as f:
                        shutil.copyfileobj(source, f)
                except (OSError, EOFError, zlib.error, tarfile.TarError) as e:  # broken archive, full disk
                    raise UserError(f"cannot unpack {name} from {origin} into {parts[name]} ({e}); check "
                                    f"the free space in {CORPORA}/ or download the archive again") from None
                checksum = IWSLT_CHECKSUMS.get(name)
                if check_files and checksum and not checksum_ok(parts[name], checksum):
                    raise UserError(f"{origin}: {name} is not the released file (checksum differs from "
                                    f"{checksum}); download the archive again")
        missing = sorted(set(wanted) - set(parts))
        if missing:
            raise UserError(f"{origin} lacks {len(missing)} of the {len(wanted)} IWSLT 2016 de-en files "
                            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        for name, part in parts.items():
            os.replace(part, wanted[name])
        print(f"{CORPORA}/: {len(parts)} files unpacked from {origin}")
    finally:
        for part in parts.values():
            _remove(part)


def iwslt2016(args):
    """Fetches the IWSLT 2016 archive (or takes --from's) and unpacks the de-en files the presets use."""
    splits = ("train", *DATASETS["iwslt2016"]["splits"])
    wanted = {os.path.basename(p): p for split in splits for p in corpus_paths("iwslt2016", split)}
    if all(present(path, IWSLT_CHECKSUMS.get(name)) for name, path in wanted.items()):
        print(f"{CORPORA}/: all {len(wanted)} IWSLT 2016 files already present")
        return
    if args.source_dir:
        for name, checksum in ((IWSLT_WHOLE, IWSLT_WHOLE_MD5), (IWSLT_PAIR, None), ("de-en.tgz", None)):
            archive = os.path.join(args.source_dir, name)
            if os.path.isfile(archive):
                if checksum and not checksum_ok(archive, checksum):
                    raise UserError(f"{archive} is not the published archive (its checksum differs from "
                                    f"{checksum}); download it again")
                return install(_archive_members(archive), wanted, archive, check_files=not checksum)
        return install(_directory_members(args.source_dir), wanted, args.source_dir, check_files=True)

    sources = IWSLT_SOURCES
    if args.mirror:
        sources = ((args.mirror + IWSLT_PAIR, None, "de-en.tgz"),
                   (args.mirror + IWSLT_WHOLE, IWSLT_WHOLE_MD5, IWSLT_WHOLE))
    failures = []
    for url, checksum, name in sources:
        archive = os.path.join(CORPORA, name)
        failed = obtain(archive, [(url, checksum)], retries=args.retries, wait=args.retry_wait)
        if failed:
            failures += failed
            continue
        try:
            return install(_archive_members(archive), wanted, url, check_files=not checksum)
        except UserError as e:  # a wrong archive: the next address may serve the right one
            failures.append(str(e))
        finally:
            _remove(archive)  # unpacked or unusable: either way no longer needed
    raise UserError(f"could not fetch the IWSLT 2016 archive ({'; '.join(failures)}); download "
                    f"{IWSLT_WHOLE} (or the de-en.tgz inside it, packed or unpacked) by hand into DIR "
                    f"and run python download.py iwslt2016 --from DIR")


def main(argv):
    parser = Parser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("dataset", nargs="?", choices=sorted(DATASETS),
                        help="the corpus to fetch (or give the --preset that trains on it)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="fetch the corpus this preset trains on")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from", dest="source_dir", metavar="DIR",
                       help="import files downloaded by hand from DIR instead of fetching them")
    where.add_argument("--mirror", metavar="BASE_URL", default=os.environ.get(MIRROR_ENV),
                       help=f"try BASE_URL instead of the public addresses, with the same relative "
                            f"paths (default: ${MIRROR_ENV})")
    parser.add_argument("--retries", type=int, default=3, help="attempts per address (default: 3)")
    parser.add_argument("--retry_wait", type=float, default=2.0, metavar="SECONDS",
                        help="wait before the second attempt, doubled after each failure (default: 2)")
    args = parser.parse_args(argv)
    if args.preset:
        args.dataset = args.dataset or PRESETS[args.preset].get("dataset", Hyperparams.dataset)
    if not args.dataset:
        parser.error(f"name the corpus to fetch: {' or '.join(sorted(DATASETS))} (or --preset NAME)")
    if args.source_dir and not os.path.isdir(args.source_dir):
        raise UserError(f"--from {args.source_dir}: no such directory")
    if args.mirror:
        if urllib.parse.urlsplit(args.mirror).scheme not in ("http", "https", "ftp", "file"):
            raise UserError(f"--mirror {args.mirror} is not an address; give one like https://example.org/corpora/ "
                            f"(or file:///path/to/dir/)")
        args.mirror = args.mirror.rstrip("/") + "/"
    if args.retries < 1:
        raise UserError(f"--retries must be at least 1, got {args.retries}")
    if not args.retry_wait >= 0:  # NaN too
        raise UserError(f"--retry_wait must be 0 or more seconds, got {args.retry_wait}")
    {"multi30k": multi30k, "iwslt2016": iwslt2016}[args.dataset](args)


if __name__ == "__main__":
    run(main)

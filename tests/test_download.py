"""download.py against a real HTTP server on 127.0.0.1 serving small files laid out like the real ones."""
import gzip
import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import corpora
import download
import fetch
from messages import UserError
from conftest import ROOT, SHARED_DATA
from corpora import corpus_paths

IWSLT_NAMES = [os.path.basename(p) for split in ("train", "dev2010", "tst2010", "tst2011", "tst2012",
                                                  "tst2013", "tst2014")
               for p in corpus_paths("iwslt2016", split)]
MULTI30K_NAMES = list(corpora.MULTI30K_CHECKSUMS)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Server(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes, or (bytes, content type)) with Range support; records requests.

    `cut` holds paths whose next response stops halfway through; `no_range`
    makes it ignore Range headers; /uc behaves like Google Drive's large-file
    warning, which confirms to /download.
    """
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.cut, self.no_range, self.requests = {}, set(), False, []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        path, _, query = self.path.partition("?")
        server.requests.append((path, query, self.headers.get("Range")))
        if path == "/uc":
            page = ('<html><body>Google Drive can\'t scan this file for viruses.'
                    '<form id="download-form" action="/download" method="get">'
                    '<input type="hidden" name="id" value="abc"><input type="hidden" name="export" '
                    'value="download"><input type="hidden" name="confirm" value="t">'
                    '<input type="hidden" name="uuid" value="u-1"></form></body></html>').encode()
            return self.send(200, page, "text/html; charset=utf-8")
        if path == "/download":
            path = "/2016-01.tgz" if "confirm=t" in query and "uuid=u-1" in query else "/missing"
        body, content_type = server.files.get(path), "application/octet-stream"
        if body is None:
            return self.send(404, b"not found", "text/plain")
        if isinstance(body, tuple):
            body, content_type = body
        start = int(self.headers["Range"][6:].split("-")[0]) if self.headers.get("Range") else 0
        if server.no_range or not start:
            return self.send(200, body, content_type, cut=path in server.cut)
        self.send(206, body[start:], content_type, cut=path in server.cut,
                  extra={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})

    def send(self, status, body, content_type, cut=False, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if cut:  # promise the whole body, deliver half, hang up
            self.server.cut.discard(self.path.partition("?")[0])
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    server = Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_url():
    """The address of a port nobody listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def corpora_files(root):
    return sorted(str(p.relative_to(root)) for p in (root / "corpora").rglob("*") if p.is_file()) \
        if (root / "corpora").exists() else []


# --- Multi30k ---

@pytest.fixture
def multi30k_files(monkeypatch):
    """Small gzip files under the real names, with their checksums in place of the real ones."""
    files = {name: gzip.compress(f"Zeile {i} von {name}\n".encode() * (300 + i), mtime=0)
             for i, name in enumerate(MULTI30K_NAMES)}
    monkeypatch.setattr(corpora, "MULTI30K_CHECKSUMS", {n: sha256(b) for n, b in files.items()})
    return files


def serve_multi30k(server, files, prefix=""):
    for name, body in files.items():
        server.files[f"{prefix}/{corpora.MULTI30K_DIR}{name}"] = body


def run_download(*argv):
    download.main(["--retry_wait", "0", *argv])


@pytest.mark.e2e
def test_multi30k_falls_back_to_the_second_mirror_and_skips_present_files(
        server, dead_url, workdir, multi30k_files, monkeypatch):
    serve_multi30k(server, multi30k_files, prefix="/repo")
    monkeypatch.setattr(corpora, "MULTI30K_BASES", (dead_url + "/", server.url + "/repo/"))
    run_download("multi30k", "--retries", "2")
    for name, body in multi30k_files.items():
        assert (workdir / "corpora" / "multi30k" / name).read_bytes() == body
    assert not [f for f in corpora_files(workdir) if f.endswith(".part")]
    served = len(server.requests)
    run_download("multi30k")  # all present and verified: nothing is fetched
    assert len(server.requests) == served == len(multi30k_files)


@pytest.mark.e2e
@pytest.mark.parametrize("no_range", [False, True], ids=["resumed", "server-without-range"])
def test_a_cut_connection_is_retried_and_resumed(server, workdir, multi30k_files, no_range):
    serve_multi30k(server, multi30k_files)
    server.cut.add(f"/{corpora.MULTI30K_DIR}train.de.gz")
    server.no_range = no_range
    run_download("multi30k", "--mirror", server.url)
    body = multi30k_files["train.de.gz"]
    assert (workdir / "corpora/multi30k/train.de.gz").read_bytes() == body
    ranges = [r for path, _, r in server.requests if path.endswith("/train.de.gz")]
    assert ranges == [None, f"bytes={len(body) // 2}-"]  # asked to resume; restarted if refused


@pytest.mark.e2e
def test_mirror_comes_from_the_environment(server, workdir, multi30k_files, monkeypatch):
    serve_multi30k(server, multi30k_files, prefix="/m")
    monkeypatch.setenv(download.MIRROR_ENV, server.url + "/m")
    run_download("multi30k")
    assert len(corpora_files(workdir)) == len(multi30k_files)


@pytest.mark.e2e
def test_a_wrong_file_is_refused_and_removed(server, workdir, multi30k_files, monkeypatch):
    serve_multi30k(server, multi30k_files)
    server.files[f"/{corpora.MULTI30K_DIR}val.en.gz"] = b"an error page served as a file"
    with pytest.raises(UserError, match=r"could not fetch val.en.gz .*checksum mismatch"):
        run_download("multi30k", "--mirror", server.url)
    assert "corpora/multi30k/val.en.gz" not in corpora_files(workdir)
    assert not [f for f in corpora_files(workdir) if f.endswith(".part")]


def test_from_dir_imports_and_checks(tmp_path, workdir, multi30k_files):
    source = tmp_path / "by_hand"
    source.mkdir()
    for name in ("train.de.gz", "train.en.gz", "val.de.gz", "val.en.gz"):
        (source / name).write_bytes(multi30k_files[name])
    with pytest.raises(UserError, match="test_2016_flickr.de.gz is not in --from"):
        run_download("multi30k", "--from", str(source))
    (source / "test_2016_flickr.de.gz").write_bytes(multi30k_files["test_2016_flickr.de.gz"])
    (source / "test_2016_flickr.en.gz").write_bytes(b"edited by hand")
    with pytest.raises(UserError, match="test_2016_flickr.en.gz is not the published file"):
        run_download("multi30k", "--from", str(source))
    (source / "test_2016_flickr.en.gz").write_bytes(multi30k_files["test_2016_flickr.en.gz"])
    run_download("--preset", "multi30k_cpu", "--from", str(source))  # the preset names the corpus
    assert len(corpora_files(workdir)) == 6  # the optional test splits are skipped


def test_the_corpus_must_be_named(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_download()
    assert exit_info.value.code == 2
    assert "name the corpus to fetch: iwslt2016 or multi30k (or --preset NAME)" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir(), reason="../shared/data/multi30k is absent")
def test_built_in_checksums_match_the_real_multi30k_files(workdir):
    run_download("multi30k", "--from", str(SHARED_DATA / "multi30k"))
    assert len(corpora_files(workdir)) == 6


# --- IWSLT 2016 ---

def tgz(members):
    """A gzip'd tar holding `members` (name -> bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def iwslt(monkeypatch):
    """A de-en.tgz and a 2016-01.tgz laid out like the real ones, with their checksums patched in."""
    files = {name: f"<seg id=\"1\"> {name} </seg>\n".encode() for name in IWSLT_NAMES}
    pair = tgz({f"de-en/{name}": data for name, data in {**files, "README": b"readme"}.items()})
    whole = tgz({"2016-01/texts/fr/en/fr-en.tgz": b"other pair", f"2016-01/{corpora.IWSLT_PAIR}": pair})
    monkeypatch.setattr(corpora, "IWSLT_CHECKSUMS",
                        {n: sha256(d) for n, d in files.items() if n.endswith(".xml")})
    monkeypatch.setattr(corpora, "IWSLT_WHOLE_MD5", "md5:" + hashlib.md5(whole).hexdigest())
    return files, pair, whole


@pytest.mark.e2e
def test_iwslt_wrong_archive_then_drive_confirmation_page(server, workdir, iwslt, monkeypatch):
    files, _, whole = iwslt
    server.files["/wit3/" + corpora.IWSLT_PAIR] = tgz({"de-en/README": b"not the data"})
    server.files["/2016-01.tgz"] = whole
    monkeypatch.setattr(corpora, "IWSLT_SOURCES", (
        (server.url + "/wit3/" + corpora.IWSLT_PAIR, None, "de-en.tgz"),
        (server.url + "/uc?export=download&id=abc", corpora.IWSLT_WHOLE_MD5, corpora.IWSLT_WHOLE)))
    run_download("iwslt2016", "--retries", "1")
    assert corpora_files(workdir) == sorted(f"corpora/{n}" for n in files)  # the archives are gone
    for name, data in files.items():
        assert (workdir / "corpora" / name).read_bytes() == data
    assert [path for path, _, _ in server.requests] == ["/wit3/" + corpora.IWSLT_PAIR, "/uc", "/download"]
    run_download("iwslt2016")  # present: no request
    assert len(server.requests) == 3


@pytest.mark.e2e
def test_iwslt_per_pair_archive_from_a_mirror(server, workdir, iwslt):
    files, pair, _ = iwslt
    server.files["/wit3/" + corpora.IWSLT_PAIR] = pair
    run_download("iwslt2016", "--mirror", server.url + "/wit3")
    assert corpora_files(workdir) == sorted(f"corpora/{n}" for n in files)


@pytest.mark.e2e
def test_iwslt_archive_with_a_wrong_file_leaves_nothing(server, workdir, iwslt, monkeypatch):
    _, pair, _ = iwslt
    server.files["/" + corpora.IWSLT_PAIR] = pair
    checksums = dict(corpora.IWSLT_CHECKSUMS, **{"IWSLT16.TED.tst2012.de-en.en.xml": sha256(b"other")})
    monkeypatch.setattr(corpora, "IWSLT_CHECKSUMS", checksums)
    with pytest.raises(UserError, match="tst2012.de-en.en.xml is not the released file"):
        run_download("iwslt2016", "--mirror", server.url)
    assert corpora_files(workdir) == []


@pytest.mark.parametrize("layout", ["whole", "pair", "unpacked"])
def test_iwslt_from_dir(tmp_path, workdir, iwslt, layout):
    files, pair, whole = iwslt
    source = tmp_path / "by_hand"
    source.mkdir()
    if layout == "whole":
        (source / "2016-01.tgz").write_bytes(whole)
    elif layout == "pair":
        (source / "de-en.tgz").write_bytes(pair)
    else:
        for name, data in files.items():
            (source / name).write_bytes(data)
    run_download("iwslt2016", "--from", str(source))
    assert corpora_files(workdir) == sorted(f"corpora/{n}" for n in files)


def test_iwslt_from_dir_missing_files(tmp_path, workdir, iwslt):
    source = tmp_path / "by_hand"
    source.mkdir()
    (source / "train.tags.de-en.de").write_text("only one file")
    with pytest.raises(UserError, match=r"lacks 13 of the 14 IWSLT 2016 de-en files \(IWSLT16.TED.dev2010"):
        run_download("iwslt2016", "--from", str(source))
    assert corpora_files(workdir) == []


@pytest.mark.e2e
def test_a_page_without_confirmation_is_an_error(server, workdir, iwslt):
    login = (b"<html><form action='/login'><input name='user'></form></html>", "text/html")
    server.files["/" + corpora.IWSLT_PAIR] = server.files["/" + corpora.IWSLT_WHOLE] = login
    with pytest.raises(UserError, match="could not fetch the IWSLT 2016 archive .*served a web page"):
        run_download("iwslt2016", "--mirror", server.url)
    assert corpora_files(workdir) == []


def test_confirmation_url_from_a_link():
    page = b'<a id="uc-download-link" href="/uc?export=download&amp;confirm=X1y&amp;id=abc">Download</a>'
    assert fetch.confirmation_url(page, "https://drive.google.com/uc?id=abc") == \
        "https://drive.google.com/uc?export=download&confirm=X1y&id=abc"
    assert fetch.confirmation_url(b"<html><p>Sign in</p></html>", "https://x/") is None


# --- the command line: exit code 2, one line, nothing half-written ---

def run_cli(cwd, *argv):
    result = subprocess.run([sys.executable, str(ROOT / "download.py"), "--retry_wait", "0", *argv],
                            cwd=cwd, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr


@pytest.mark.parametrize("argv, message", [
    (["--mirror", "foo"], "--mirror foo is not an address; give one like https://"),
    (["--retry_wait", "-1"], "--retry_wait must be 0 or more seconds, got -1.0"),
    (["--retries", "0"], "--retries must be at least 1, got 0"),
])
def test_bad_download_flags_are_one_line_errors(workdir, argv, message):
    with pytest.raises(UserError, match=message):
        download.main(["multi30k", *argv])
    assert corpora_files(workdir) == []


def test_cli_all_mirrors_down(tmp_path, dead_url):
    code, err = run_cli(tmp_path, "multi30k", "--mirror", dead_url, "--retries", "2")
    last = err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith("download.py: error: could not fetch train.de.gz")
    assert f"{dead_url}/data/task1/raw/train.de.gz" in last and "--from DIR" in last
    assert corpora_files(tmp_path) == []


@pytest.mark.e2e
def test_cli_checksum_mismatch_with_the_real_checksums(tmp_path, server):
    server.files[f"/{corpora.MULTI30K_DIR}train.de.gz"] = gzip.compress(b"not multi30k\n")
    code, err = run_cli(tmp_path, "multi30k", "--mirror", server.url)
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and last.startswith("download.py: error: could not fetch train.de.gz")
    assert "checksum mismatch" in last and corpora.MULTI30K_CHECKSUMS["train.de.gz"] in last
    assert corpora_files(tmp_path) == []


def test_cli_bad_from_dir(tmp_path):
    code, err = run_cli(tmp_path, "iwslt2016", "--from", str(tmp_path / "nowhere"))
    assert code == 2 and "no such directory" in err and err.count("\n") == 1

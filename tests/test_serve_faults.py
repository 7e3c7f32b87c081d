"""serve.py against clients that do not behave, over real sockets on 127.0.0.1: idle and half-sent connections,
too many of them, bodies that never end or stop half-way, requests from other sites' pages or naming another
host, and SIGTERM while a client trickles its body."""
import json
import os
import resource
import signal
import socket
import threading
import time

import pytest

from conftest import Server, get, post

pytestmark = pytest.mark.e2e


def connect(url):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def closed_within(sock, seconds):
    """Whether the server closes the connection within `seconds` (what it sent before is returned too)."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def raw(url, text):
    """A raw HTTP request: (status, JSON answer)."""
    with connect(url) as sock:
        sock.sendall(text.encode())
        _, received = closed_within(sock, 30)
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def guarded(trained_model):
    _, flags = trained_model
    server = Server(*flags, "--request_timeout", "1.5", "--max_connections", "6", "--shutdown_timeout", "2")
    yield server
    server.stop()


def test_a_connection_that_never_sends_its_headers_is_closed(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(b"P")  # one byte, then nothing
        assert closed_within(sock, 10)[0]
    with connect(guarded.url) as sock:  # the same after an answer, on a kept-alive connection
        body = json.dumps({"text": "eins"})
        sock.sendall(f"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n{body}POST /tr".encode())
        closed, received = closed_within(sock, 10)
        assert closed and received.startswith(b"HTTP/1.1 200")


def test_a_connection_beyond_the_limit_closes_the_one_waiting_longest_for_its_headers(guarded):
    idle = [connect(guarded.url) for _ in range(6)]  # the limit: 6 that send nothing
    try:
        time.sleep(0.3)
        assert post(guarded.url + "/translate", {"text": "eins"})[0] == 200  # the seventh is served ...
        assert closed_within(idle[0], 1)[0] and not closed_within(idle[1], 0.3)[0]  # ... in the oldest's place
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    head = (b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{")
    busy = [connect(guarded.url) for _ in range(6)]  # 6 in a request: their bodies come slowly
    try:
        for sock in busy:
            sock.sendall(head)
        time.sleep(0.3)
        with connect(guarded.url) as extra:
            assert closed_within(extra, 1)[0]  # none waits for its headers: the seventh is closed at once
        assert not closed_within(busy[-1], 0.1)[0]
    finally:
        for sock in busy:
            sock.close()
    time.sleep(0.3)
    assert post(guarded.url + "/translate", {"text": "eins"})[0] == 200


def test_a_body_that_stops_or_never_ends(guarded):
    start = time.time()
    status, answer = raw(guarded.url, "POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"te")
    assert status == 408 and "--request_timeout 1.5" in answer["error"] and time.time() - start < 10
    with connect(guarded.url) as sock:  # half a body, then the client goes away
        sock.sendall(b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\"")
    time.sleep(0.5)
    assert get(guarded.url + "/health")[0] == 200


def test_requests_from_other_sites_or_naming_another_host_are_refused(guarded):
    body = '{"text": "eins"}'
    port = guarded.url.rsplit(":", 1)[1]

    def request(host, kind="application/json", extra=""):
        return raw(guarded.url, f"POST /translate HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\n{extra}"
                                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")

    status, answer = request(f"127.0.0.1:{port}", kind="text/plain")
    assert status == 415 and "application/json" in answer["error"]  # what a cross-site form can send
    status, answer = request(f"rebound.example:{port}")
    assert status == 421 and "rebound.example" in answer["error"]
    status, answer = request(f"127.0.0.1:{port}", extra="Origin: https://elsewhere.example\r\n")
    assert status == 403 and "--allowed_origins https://elsewhere.example" in answer["error"]
    status, answer = request(f"localhost:{port}", extra=f"Origin: http://localhost:{port}\r\n")
    assert status == 200  # the server's own page


@pytest.mark.parametrize("timeout, signals", [("2", 1), ("600", 2)], ids=["the shutdown timeout", "a second SIGTERM"])
def test_sigterm_while_a_client_trickles_its_body_ends_within_the_shutdown_timeout_or_at_a_second(
        trained_model, timeout, signals):
    _, flags = trained_model
    server = Server(*flags, "--request_timeout", "600", "--shutdown_timeout", timeout)
    sock = connect(server.url)
    sock.sendall(b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{")
    time.sleep(0.3)
    start = time.time()
    for _ in range(signals):
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    log = "".join(server.lines) + server.process.communicate(timeout=60)[1]
    code = server.process.returncode
    sock.close()
    assert code == 0 and time.time() - start < 20 and "Traceback" not in log, log[-2000:]
    assert "a request in flight was ended" in log


def test_connections_that_cannot_be_accepted_are_one_log_line_not_a_flood(trained_model):
    # open files run out for a reason other than connections (here: the limit lowered under the running server)
    _, flags = trained_model
    server = Server(*flags, "--request_timeout", "2")
    log = []
    reader = threading.Thread(target=lambda: log.extend(server.process.stderr), daemon=True)
    reader.start()  # (a flood must not fill the pipe and stop the server)
    pid, (_, hard) = server.process.pid, resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE)

    def run_out_of_files(connections, seconds):
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 4, hard))
        waiting = [connect(server.url) for _ in range(connections)]
        for sock in waiting:
            sock.sendall(b"P")
        time.sleep(seconds)  # asyncio tries again every second, for each connection still waiting
        return waiting

    for sock in run_out_of_files(100, 4):
        sock.close()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    deadline = time.time() + 30
    while time.time() < deadline and post(server.url + "/translate", {"text": "eins"})[0] != 200:
        time.sleep(0.5)
    assert post(server.url + "/translate", {"text": "eins"})[0] == 200  # served again once files are free
    waiting = run_out_of_files(20, 1.5)  # and a shutdown while connections wait for files
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=60)
    reader.join(timeout=30)
    for sock in waiting:
        sock.close()
    told = [line for line in log if "cannot accept connections" in line]
    assert code == 0 and 1 <= len(told) <= 2 and "Traceback" not in "".join(log), "".join(log)[-3000:]
    assert "Too many open files" in told[0] and "ulimit -n" in told[0] and len(log) < 20

"""serve.py's socket: where it listens (listening_socket, address, the warning when it is open to others), and
the bounds it puts on connections that do not behave.

uvicorn's own limits start once a request's head is whole (limit_concurrency
answers 503 then), and a client that sends a few bytes and waits holds its
connection, and a file descriptor, for ever. Here, on top of uvicorn's h11
protocol:

- at most max_connections open at once, so that descriptors never run out
  (serve.py raises the process' limit of open files to fit them): one more
  closes the connection that has waited longest for a request's head (a
  slow client's, or one idle between requests), or, if every connection is
  in a request, is itself closed as soon as it is accepted. A flood of
  connections that send nothing thus cannot keep out a client that sends its
  request at once;
- a request's head (its line and headers) must be whole within head_timeout
  seconds of the connection or of the previous answer on it: a connection
  still waiting for one then is closed. The body has its own deadline
  (serving.requests.read_body), and uvicorn closes a connection idle between
  requests after its keep-alive timeout;
- should open files run out all the same (other files the process holds),
  asyncio's error for each connection it cannot accept, a traceback each, up
  to 2,048 of them a second, is one line every ACCEPT_NOTE_EVERY seconds
  (AcceptErrors).
"""
import collections
import logging
import math
import resource
import socket
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from messages import UserError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def guarded(max_connections, head_timeout):
    """uvicorn's h11 protocol class with these bounds (a class for Config(http=...))."""
    waiting = collections.OrderedDict()  # the connections, in the order they began to wait for a head

    class Guarded(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > max_connections and not self.make_way():
                transport.abort()  # (connection_lost takes it out of self.connections)
                return
            self.wait_for_head()

        def on_response_complete(self):
            super().on_response_complete()
            self.head_deadline.cancel()
            self.wait_for_head()

        def connection_lost(self, exc):
            super().connection_lost(exc)
            waiting.pop(self, None)
            if getattr(self, "head_deadline", None):
                self.head_deadline.cancel()

        def wait_for_head(self):
            waiting[self] = None
            waiting.move_to_end(self)
            self.head_deadline = self.loop.call_later(head_timeout, self.head_late)

        def waiting_for_head(self):
            """No request on this connection yet, or none since the last answer (its head may be half sent)."""
            return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

        def make_way(self):
            """Closes the connection that has waited longest for a request's head; False if none waits."""
            for other in waiting:  # (those in a request stay at the front until they are answered)
                if other.waiting_for_head():
                    other.transport.abort()
                    return True
            return False

        def head_late(self):
            if self.waiting_for_head():
                self.transport.abort()  # no request line and headers in time

    return Guarded


ACCEPT_NOTE_EVERY = 10.0  # seconds between two lines about connections that could not be accepted


class AcceptErrors(logging.Filter):
    """A filter for the "asyncio" logger: its "socket.accept() out of system resource" errors (asyncio tries
    again a second later, and logs once per waiting connection each time) become one line at most every
    `every` seconds, that says how many more there were and what to do; a try that comes after shutdown
    closed the socket (a traceback) is dropped."""

    def __init__(self, every=ACCEPT_NOTE_EVERY):
        super().__init__()
        self.every, self.last, self.more = every, -math.inf, 0

    def filter(self, record):
        message = str(record.msg)
        if message.startswith("Exception in callback BaseSelectorEventLoop._start_serving"):
            return False  # its next try came after shutdown closed the socket: nothing left to accept
        if not message.startswith("socket.accept() out of system resource"):
            return True
        now = time.monotonic()
        if now - self.last < self.every:
            self.more += 1
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg = ("cannot accept connections (%s): they wait in the kernel's queue (%d more times since the "
                      "last such line); lower --max_connections or raise the limit of open files (ulimit -n)")
        record.args = (getattr(error, "strerror", None) or "out of system resources", self.more)
        record.exc_info, record.exc_text = None, None
        self.last, self.more = now, 0
        return True


def raise_open_files(wanted):
    """Raises the soft limit of open files towards `wanted` (at most the hard limit); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def address(host, port):
    """The service's URL: an IPv6 address in brackets, as URLs write it (http://[::1]:8000)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def exposed(host, keys):
    """The warning for a server that anyone who reaches it may use without limit, or None."""
    if keys is None and host not in LOOPBACK and not host.startswith("127."):
        return (f"--host {host} without --api_keys: anyone who reaches this address can translate without limit; "
                "pass --api_keys FILE, or keep 127.0.0.1 behind a proxy")
    return None


def listening_socket(host, port):
    """A socket listening on host:port (port 0: a free one), or a one-line error."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # from now on connections wait in the kernel's queue until uvicorn accepts them
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port or --host") from None
    return sock

"""What a request to serve.py must be before it reaches the model: a JSON object of the known fields, numbers in
their ranges, a body of bounded size and depth; a BadRequest (its status, the field, what is wrong) otherwise."""
import asyncio
import urllib.parse

from files import TooDeep, parse_json

MAX_FIELDS = 1000  # form fields in one body (a list of q counts each)


class BadRequest(Exception):
    """A request refused before it reaches the model: its HTTP status, the field, what is wrong, the limit
    (and the response's headers)."""

    def __init__(self, status, field, message, limit=None, headers=None):
        super().__init__(message)
        self.status, self.field, self.message, self.limit, self.headers = status, field, message, limit, headers

    def response(self):
        body = {"error": f"{self.field}: {self.message}" if self.field else self.message, "field": self.field}
        return body if self.limit is None else {**body, "limit": self.limit}


def check_fields(body, known):
    """Refuses a body that is not an object, lacks "text" or has a field not in `known` (422)."""
    if not isinstance(body, dict):
        raise BadRequest(422, None, "the body must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(422, unknown[0], f"is not a field of this request (the fields: {', '.join(sorted(known))})")
    if "text" not in body:
        raise BadRequest(422, "text", "is missing")


def number(body, field, kind, default, lowest, highest):
    """body[field] if given (an int, or for float any number), within [lowest, highest] (422 otherwise)."""
    if field not in body:
        return default
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise BadRequest(422, field, f"must be {'a number' if kind is float else 'an integer'}")
    if not lowest <= value <= highest:
        raise BadRequest(422, field, f"must be between {lowest} and {highest}, got {value}", highest)
    return value


async def read_body(request, limit, timeout):
    """The request's body: at most `limit` bytes (413), whole within `timeout` seconds (408)."""
    from starlette.requests import ClientDisconnect

    body = b""
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BadRequest(413, None, f"the body is larger than {limit:,} bytes (--max_chars allows)",
                                     limit)
    except TimeoutError:
        raise BadRequest(408, None, f"the body was not whole within --request_timeout {timeout:g} s; send it at "
                                    "once", timeout, headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise BadRequest(400, None, "the client closed the connection before the body was whole") from None
    return body


def text_of(body):
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, None, f"the body is not UTF-8 (byte {e.start}); send UTF-8") from None


def parse(text):
    try:
        return parse_json(text)
    except TooDeep as e:
        raise BadRequest(400, None, f"the body's JSON is {e}; send a flat JSON object") from None
    except ValueError as e:
        raise BadRequest(400, None, f"the body is not JSON ({e}); send a JSON object") from None


async def read_json(request, limit, timeout):
    """The request's body as JSON: sent as application/json (415: what browsers send across sites without
    asking is refused), at most `limit` bytes (413) within `timeout` seconds (408), UTF-8 (400), JSON (400)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadRequest(415, None, f"the body must be sent as Content-Type: application/json, not "
                                    f"{kind or 'without one'}")
    return parse(text_of(await read_body(request, limit, timeout)))


async def read_fields(request, limit, timeout):
    """A body of JSON or of HTML form fields (application/x-www-form-urlencoded, as LibreTranslate's clients
    send) -> a dict; a field given more than once is a list; no body is {}."""
    body = await read_body(request, limit, timeout)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body.strip():
        return {}
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(text_of(body), keep_blank_values=True, strict_parsing=True,
                                           max_num_fields=MAX_FIELDS, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(400, None, "the form's fields are not UTF-8 once unquoted; send UTF-8") from None
        except ValueError as e:
            raise BadRequest(400, None, f"the body is not form fields ({e}); send name=value&... or JSON") from None
        fields = {}
        for name, value in pairs:
            fields[name] = [*fields[name], value] if isinstance(fields.get(name), list) else \
                [fields[name], value] if name in fields else value
        return fields
    if kind in ("application/json", ""):
        return parse(text_of(body))
    raise BadRequest(415, None, f"a body of {kind} is not read here; send JSON (application/json) or form fields "
                                "(application/x-www-form-urlencoded)")


LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def foreign(headers, host, allowed_origins):
    """Why a request from elsewhere than a program or this server's own pages is refused, or None.

    A page on another site can make a browser send requests here (a form's POST needs no permission), and,
    with a DNS name that it points at 127.0.0.1, read the answers (DNS rebinding). So a request whose Origin
    is another site's (browsers send it with every cross-site POST) is refused unless --allowed_origins lists
    it, and a server on loopback answers only to its loopback names in the Host header.
    """
    given = headers.get("host", "")
    if host in LOOPBACK_NAMES or host.startswith("127."):
        name = urllib.parse.urlsplit("//" + given).hostname if given else None
        if name not in LOOPBACK_NAMES | {host}:
            return 421, (f"the Host header names {given!r}, not this server on {host}: ask http://{host}:PORT "
                         "(a page that points its own name at this machine looks like this)")
    origin = headers.get("origin")
    if origin is not None and origin not in allowed_origins and "*" not in allowed_origins:
        if origin == "null" or urllib.parse.urlsplit(origin).netloc != given:
            return 403, (f"requests from the pages of {origin} are not served: call the API from a program or "
                         "from this server's own page, or start serve.py with --allowed_origins " + origin)
    return None

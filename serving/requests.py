"""What a request to serve.py must be before it reaches the model: a JSON object of the known fields, numbers in
their ranges, a body of bounded size and depth; a BadRequest (its status, the field, what is wrong) otherwise."""
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


async def read_body(request, limit):
    """The request's body: at most `limit` bytes (413)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, None, f"the body is larger than {limit:,} bytes (--max_chars allows)", limit)
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


async def read_json(request, limit):
    """The request's body as JSON: at most `limit` bytes (413), UTF-8 (400), JSON (400)."""
    return parse(text_of(await read_body(request, limit)))


async def read_fields(request, limit):
    """A body of JSON or of HTML form fields (application/x-www-form-urlencoded, as LibreTranslate's clients
    send) -> a dict; a field given more than once is a list; no body is {}."""
    body = await read_body(request, limit)
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

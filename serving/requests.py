"""What a request to serve.py must be before it reaches the model: a JSON object of the known fields, numbers in
their ranges, a body of bounded size and depth; a BadRequest (its status, the field, what is wrong) otherwise."""
from files import TooDeep, parse_json


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


async def read_json(request, limit):
    """The request's body as JSON: at most `limit` bytes (413), UTF-8 (400), JSON (400)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, None, f"the body is larger than {limit:,} bytes (--max_chars allows)", limit)
    try:
        return parse_json(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadRequest(400, None, f"the body is not UTF-8 (byte {e.start}); send UTF-8 JSON") from None
    except TooDeep as e:
        raise BadRequest(400, None, f"the body's JSON is {e}; send a flat JSON object") from None
    except ValueError as e:
        raise BadRequest(400, None, f"the body is not JSON ({e}); send a JSON object") from None

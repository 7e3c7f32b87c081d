"""LibreTranslate's HTTP API, beside serve.py's own, under /libretranslate/: what editors, translation
platforms, browser extensions and client libraries (libretranslatepy) plug into.

    POST /libretranslate/translate  q (a string, or a list in JSON), source (de or auto), target (en),
                                    format (text), alternatives (0..), api_key -> {"translatedText": ...}
    GET  /libretranslate/languages  [{"code", "name", "targets"}]: German into English
    POST /libretranslate/detect     q -> [{"language": "de", "confidence": 0.0}]

Fields come as JSON or as HTML form fields, as LibreTranslate takes them;
errors are {"error": "..."} with LibreTranslate's status codes (400 for a bad
field). A text is split into sentences and put back together as on
serve.py's own /translate. This server reads one language and does not
detect: "auto" is German, and /detect says German with confidence 0 (it did
not look). format "html" is refused (400): only plain text is translated.
"""
import contextlib

from serving.requests import BadRequest, number, read_fields

SOURCE, TARGET = "de", "en"
LANGUAGES = [{"code": SOURCE, "name": "German", "targets": [TARGET]},
             {"code": TARGET, "name": "English", "targets": []}]
UNDETECTED = {"language": SOURCE, "confidence": 0.0}  # the one language read; 0: nothing was detected


class LibreTranslate:
    """The three endpoints, on top of serve.Service (its limits, keys, splitting and batching)."""

    def __init__(self, service):
        self.service = service

    async def fields(self, request, needs_text=True):
        """The request's fields, its key checked (the api_key field, or Authorization: Bearer)."""
        fields = await read_fields(request, self.service.body_limit, self.service.args.request_timeout)
        if not isinstance(fields, dict):
            raise BadRequest(400, None, "the body must be a JSON object or form fields")
        key = fields.get("api_key")
        if key is not None and not isinstance(key, str):
            raise BadRequest(400, "api_key", "must be a string")
        texts = fields.get("q", "")
        key = self.service.identify(request, key or None)  # (401 or 403 before what else is wrong is said)
        self.service.admit(key, texts if isinstance(texts, list) else [texts])
        if needs_text and "q" not in fields:
            raise BadRequest(400, "q", "is missing: give the text to translate")
        return fields

    async def translate(self, request):
        with lt_status():
            fields = await self.fields(request)
            source, target = fields.get("source", "auto"), fields.get("target", TARGET)
            if source not in (SOURCE, "auto"):
                raise BadRequest(400, "source", f"{source!r} is not a language this server translates from; "
                                                f"it translates {SOURCE} (or auto) into {TARGET}")
            if target != TARGET:
                raise BadRequest(400, "target", f"{target!r} is not a language this server translates into; "
                                                f"it translates {SOURCE} into {TARGET}")
            if fields.get("format", "text") != "text":
                raise BadRequest(400, "format", f"{fields.get('format')!r} is not translated here: send plain "
                                                "text with format text")
            alternatives = fields.get("alternatives", 0)
            alternatives = number({"alternatives": whole(alternatives) if isinstance(alternatives, str) else
                                   alternatives}, "alternatives", int, 0, 0, self.service.args.max_beam_size - 1)
            service = self.service
            texts, listed = service.texts(fields["q"], "q")
            found = service.split_texts(texts, "q", listed)
            hp = service.engine.hp
            key = (max(hp.beam_size, alternatives + 1), alternatives + 1, float(hp.length_penalty))
            results = await service.translate_paragraphs(found, "q", listed, key)
        answers = []
        for paragraph, sentences in zip(found, results):
            joined = [paragraph.join([hypotheses[min(k, len(hypotheses) - 1)][0] for hypotheses in sentences])
                      for k in range(alternatives + 1)]
            answer = {"translatedText": joined[0]}
            if alternatives:
                answer["alternatives"] = joined[1:]
            if source == "auto":
                answer["detectedLanguage"] = dict(UNDETECTED)
            answers.append(answer)
        if not listed:
            return answers[0]
        merged = {"translatedText": [a["translatedText"] for a in answers]}
        for name in ("alternatives", "detectedLanguage"):
            if name in answers[0]:
                merged[name] = [a[name] for a in answers]
        return merged

    async def languages(self, request):
        with lt_status():
            await self.fields(request, needs_text=False)
        return LANGUAGES

    async def detect(self, request):
        with lt_status():
            fields = await self.fields(request)
            self.service.texts(fields["q"], "q")
        return [dict(UNDETECTED)]


def whole(value):
    """A form field's number (forms carry text): an integer of at least 0."""
    if not value.strip().isdigit():
        raise BadRequest(400, "alternatives", f"must be a whole number, got {value!r}")
    return int(value)


@contextlib.contextmanager
def lt_status():
    """LibreTranslate answers 400 where serve.py's own API says 422 (a field of the wrong type or value)."""
    try:
        yield
    except BadRequest as error:
        if error.status == 422:
            error.status = 400
        raise

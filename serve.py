"""Serves a trained model over HTTP: a JSON API that batches concurrent requests, and a page to try it.

    python serve.py --logdir logdir                  # the TensorFlow model, on http://127.0.0.1:8000
    python serve.py --ct2 exported_ct2 --port 8080   # its CTranslate2 export (export.py --format ctranslate2)
    curl -s 127.0.0.1:8000/translate -H 'Content-Type: application/json' -d '{"text": "Zwei Hunde im Schnee."}'

POST /translate  {"text": "..." or ["...", ...], "beam_size"?, "nbest"?, "length_penalty"?, "split"?}
                 -> {"translations": [...]} in the input's order; each text may be a paragraph (or
                 several): its sentences are translated one by one and put back in its own layout
                 ("split": false takes each text as one sentence). With nbest, also "sentences": for
                 each text, [{"source", "nbest": [{"translation", "score"}, ...]}, ...], sentence by sentence
POST /attention  {"text": "...", "translation"?: "..."} -> the source and target tokens and the
                 cross-attention weights of every layer and head (for the best translation, or the one
                 given) of one sentence
GET  /health     the engine, the checkpoint, the vocab's digest, the queue
GET  /metrics    Prometheus metrics (serving/metrics.py)
GET  /           a page to type German text and see the translations, the n-best lists and the attention
GET  /docs       the API docs (OpenAPI, /openapi.json), served from here
/libretranslate/translate, /languages, /detect: LibreTranslate's API (serving/libretranslate.py)

With --api_keys FILE every request but /health, /metrics, the page and the
docs needs a key (serving/keys.py), with its own limits per minute.

The sentences of concurrent requests are merged into one decoder call of at
most --max_batch_tokens tokens (padding included), waiting at most
--max_wait_ms for more to come; the model runs in a thread of its own, off the
event loop. At most --max_queue sentences wait: beyond, a request gets 503
and Retry-After at once. A bad request (not JSON or UTF-8, a wrong type, an
unknown field, empty text, more than --max_sentences sentences or
--max_chars characters, a beam wider than --max_beam_size, a sentence too
long to translate) gets a JSON error naming the field and the limit and never
reaches the model; every request is one log line. At most --max_connections
connections are open at once (one more closes the one that has waited longest
for its request), and a request's headers, then its body, must
arrive within --request_timeout seconds (serving/connections.py); a request
from another site's page (its Origin) or, on 127.0.0.1, naming another host
is refused. SIGTERM stops accepting requests, finishes those in flight (for
at most --shutdown_timeout seconds; a second SIGTERM ends them at once) and
exits with code 0 (Ctrl-C: the same, with code 130).
"""
import asyncio
import collections
import dataclasses
import logging
import os
import signal

import cli
import engine
import engines
import paragraphs
import serving.page
from serving.app import ended_at_shutdown, make_app
from serving.batching import QueueFull
from serving.connections import AcceptErrors, address, exposed, guarded, listening_socket, raise_open_files
from serving.keys import read_keys
from serving.libretranslate import LibreTranslate
from serving.metrics import Metrics
from serving.requests import BadRequest, check_fields, number, read_json
from cli import parse_args, run
from hyperparams import MAX_BEAM
from messages import UserError, note
from readers import unicode_problem

# The settings serve.py reads (--help lists these; the model's own come from hparams.json or export.json)
SETTINGS = ("logdir", "vocab_dir", "seed", "decode_extra", "decode_maxlen", "beam_size", "length_penalty",
            "average_checkpoints", "preset")
VARIANTS = 8  # decoding settings kept ready at once (each a traced decoder with the TensorFlow engine)
MAX_WAIT_MS = 60000  # the longest --max_wait_ms: a minute
MAX_TIMEOUT = 3600  # the longest --request_timeout and --shutdown_timeout: an hour
SPARE_FILES = 64  # open files beside the connections: the model's, the log's, the libraries'
log = logging.getLogger("serve")


def add_serve_flags(parser):
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--max_batch_tokens", type=int, default=4096,
                        help="tokens per decoder call, padding included: sentences x the longest (default: 4096)")
    parser.add_argument("--max_wait_ms", type=float, default=10.0,
                        help="how long the first sentence waits for others to join its call (default: 10)")
    parser.add_argument("--max_queue", type=int, default=512,
                        help="sentences that may wait; beyond, requests get 503 (default: 512)")
    parser.add_argument("--max_sentences", type=int, default=64, help="sentences per request (default: 64)")
    parser.add_argument("--max_chars", type=int, default=10000, help="characters per request (default: 10000)")
    parser.add_argument("--max_beam_size", type=int, default=16, help="widest beam a request may ask for (default: 16)")
    parser.add_argument("--max_connections", type=int, default=1024,
                        help="connections open at once; one more closes the one waiting longest for its request, "
                             "or itself if every one is in a request (default: 1024)")
    parser.add_argument("--request_timeout", type=float, default=30.0,
                        help="seconds a request's headers, and then its body, may take to arrive (default: 30)")
    parser.add_argument("--shutdown_timeout", type=float, default=30.0,
                        help="seconds SIGTERM waits for requests in flight before it ends them; a second SIGTERM "
                             "ends them at once (default: 30)")
    parser.add_argument("--allowed_origins", nargs="*", default=[], metavar="ORIGIN",
                        help="web origins (https://example.org, or *) whose pages may call the API; others' "
                             "requests are refused (default: none; programs send no Origin and are served)")
    parser.add_argument("--api_keys", default=None, metavar="FILE",
                        help="require an API key (one a line, each optionally with requests_per_minute=N and "
                             "characters_per_minute=N) on every endpoint but /health, /metrics, the page and the "
                             "docs (default: no keys: keep the server on 127.0.0.1 or behind a proxy)")
    engines.add_model_flags(parser, verb="serve", ensemble=True)


class Service:
    """The endpoints: the engine, its variants for other decoding settings, the batcher and the limits."""

    def __init__(self, engine, args, keys=None):
        self.engine, self.args, self.keys = engine, args, keys  # keys: serving.keys.Keys, or None
        self.variants = collections.OrderedDict()  # decoding settings -> engine, the most recently used last
        hp = engine.hp  # the served settings: the engine itself, whose decoder main() has traced already
        self.variants[(hp.beam_size, engine.nbest, float(hp.length_penalty))] = engine
        self.batcher = None  # made on the event loop (lifespan)
        self.body_limit = 4 * args.max_chars + 4096  # UTF-8 takes at most 4 bytes a character, JSON some more
        self.model = {"engine": engine.kind, "model": engine.name, "vocab_sha256": engine.vocab_sha256,
                      "checkpoints": [os.path.basename(path) for path in engine.checkpoints]}  # names, not where
        self.metrics = Metrics(self.model, args.max_queue)
        self.libretranslate = LibreTranslate(self)

    async def translate(self, request):
        """POST /translate."""
        key = self.identify(request)  # before the body is read
        body = await read_json(request, self.body_limit, self.args.request_timeout)
        check_fields(body, {"text", "beam_size", "nbest", "length_penalty", "split"})
        if not isinstance(body.get("split", True), bool):
            raise BadRequest(422, "split", "must be true or false")
        settings, with_nbest = self.decoding(body), "nbest" in body
        texts, listed = self.texts(body["text"], "text")
        self.admit(key, texts)
        found = self.split_texts(texts, "text", listed, body.get("split", True))
        results = await self.translate_paragraphs(found, "text", listed, settings)
        answer = {"translations": [p.join([hypotheses[0][0] for hypotheses in r]) for p, r in zip(found, results)]}
        if with_nbest:
            answer["sentences"] = [[{"source": sentence, "nbest": [{"translation": text, "score": score}
                                                                   for text, score in hypotheses]}
                                    for sentence, hypotheses in zip(p.sentences, r)] for p, r in zip(found, results)]
        return answer

    def texts(self, text, field):
        """A request's text field (a string or a list of strings) -> (the texts, whether it was a list)."""
        listed = isinstance(text, list)
        if not listed and not isinstance(text, str):
            raise BadRequest(422, field, "must be a string or a list of strings")
        if listed and not text:
            raise BadRequest(422, field, "is an empty list; give at least one text")
        return (text if listed else [text]), listed

    def split_texts(self, texts, field, listed, split=True):
        """Texts -> their paragraphs.Paragraph (split into sentences, or each one sentence): each a non-empty
        string of valid Unicode, at most --max_chars characters in all and --max_sentences sentences."""
        args = self.args
        for i, text in enumerate(texts):
            where = f"{field}[{i}]" if listed else field
            if not isinstance(text, str):
                raise BadRequest(422, where, "must be a string")
            if not text.strip():
                raise BadRequest(422, where, "is empty; give German text")
            problem = unicode_problem(text)  # before any tokenizer or splitter sees it
            if problem:
                raise BadRequest(422, where, f"is not valid Unicode ({problem}); send UTF-8 text")
        characters = sum(map(len, texts))
        if characters > args.max_chars:
            raise BadRequest(413, field, f"has {characters:,} characters, more than --max_chars {args.max_chars}",
                             args.max_chars)
        if len(texts) > args.max_sentences:  # (each text is one sentence or more: refused before splitting)
            raise BadRequest(413, field, f"has {len(texts)} texts, more than --max_sentences {args.max_sentences}",
                             args.max_sentences)
        found = [paragraphs.split(text) if split else paragraphs.one(text) for text in texts]
        sentences = sum(len(p.sentences) for p in found)
        if sentences > args.max_sentences:
            raise BadRequest(413, field, f"has {sentences} sentences, more than --max_sentences "
                             f"{args.max_sentences}", args.max_sentences)
        return found

    async def translate_paragraphs(self, found, field, listed, key):
        """Paragraphs -> for each, its sentences' (translation, score) lists: every sentence encoded once,
        here (one too long to translate is refused, 413, before it reaches the model), and queued with the
        sentences of every other request."""
        rows = []
        for i, paragraph in enumerate(found):
            for j, sentence in enumerate(paragraph.sentences):
                try:
                    rows += self.engine.encode_lines([sentence])
                except engine.TooLong as e:
                    which = f"sentence {j + 1} " if len(paragraph.sentences) > 1 else ""
                    raise BadRequest(413, f"{field}[{i}]" if listed else field,
                                     f"{which}has {e.tokens:,} tokens, more than the {e.limit} a translation may "
                                     "have (--decode_maxlen)", e.limit) from None
        words = [i for i, row in enumerate(rows) if row is not None]  # the others are empty once cleaned
        try:
            futures = self.batcher.submit(key, [rows[i] for i in words])
        except QueueFull:
            raise BadRequest(503, None, f"the queue is full ({self.args.max_queue} sentences wait); retry in a "
                             "moment", self.args.max_queue, headers={"Retry-After": "1"}) from None
        results = [[("", 0.0)] * key[1] for _ in rows]
        for i, result in zip(words, await asyncio.gather(*futures)):
            results[i] = result
        results = iter(results)
        return [[next(results) for _ in paragraph.sentences] for paragraph in found]

    async def attention(self, request):
        """POST /attention: the cross-attention of every layer and head, rounded to 4 decimals."""
        key = self.identify(request)
        body = await read_json(request, self.body_limit, self.args.request_timeout)
        check_fields(body, {"text", "translation"})
        if not (isinstance(body["text"], str) and body["text"].strip()):
            raise BadRequest(422, "text", "must be a non-empty string")
        if not isinstance(body.get("translation", ""), str):  # (an empty translation is one)
            raise BadRequest(422, "translation", "must be a string")
        for field in ("text", "translation"):
            problem = unicode_problem(body.get(field, ""))
            if problem:
                raise BadRequest(422, field, f"is not valid Unicode ({problem}); send UTF-8 text")
        self.admit(key, [body["text"], body.get("translation", "")])
        if len(body["text"]) + len(body.get("translation", "")) > self.args.max_chars:
            raise BadRequest(413, "text", f"is longer than --max_chars {self.args.max_chars}", self.args.max_chars)
        sentences = len(paragraphs.split(body["text"]).sentences)
        if sentences > 1:
            raise BadRequest(422, "text", f"holds {sentences} sentences; the attention is shown one sentence at a "
                                          "time: send them one by one (/translate's \"sentences\" lists them)")
        if not hasattr(self.engine, "attention"):
            raise BadRequest(501, None, "this engine (CTranslate2) does not return attention weights; serve the "
                                        "model with --logdir to see them")
        ids = {}
        for field, encode in (("text", self.engine.source_ids), ("translation", self.engine.target_ids)):
            if field not in body:
                continue
            try:  # encoded here, once, and checked before the model's thread is asked
                ids[field] = encode(body[field])
            except engine.TooLong as e:
                raise BadRequest(413, field, f"has {e.tokens:,} tokens, more than the {e.limit} a translation may "
                                             "have (--decode_maxlen)", e.limit) from None
            except UserError as e:
                raise BadRequest(422, field, str(e)) from None
        seen = await asyncio.get_running_loop().run_in_executor(self.batcher.thread, self.engine.attention,
                                                                ids["text"], ids.get("translation"))
        cross = seen["maps"]["cross-attention"]  # (layers, h, T2, T1)
        return {"source": seen["source"], "target": seen["target"], "translation": seen["translation"],
                "layers": int(cross.shape[0]), "heads": int(cross.shape[1]),
                "attention": [[[[round(float(w), 4) for w in row] for row in head] for head in layer]
                              for layer in cross]}

    async def health(self):
        """GET /health."""
        return {"status": "ok", **self.model, "queue": len(self.batcher.jobs),
                "max_queue": self.args.max_queue, "decoder_calls": self.batcher.calls}

    async def page(self):
        """GET /."""
        from fastapi.responses import HTMLResponse

        return HTMLResponse(serving.page.html(max_chars=self.args.max_chars, max_sentences=self.args.max_sentences,
                                              max_beam_size=self.args.max_beam_size,
                                              beam_size=self.engine.hp.beam_size, keys=self.keys is not None))

    async def scrape(self):
        """GET /metrics."""
        from fastapi.responses import Response

        content, kind = self.metrics.scrape(len(self.batcher.jobs))
        return Response(content, media_type=kind)

    def identify(self, request, given=None):
        """The request's key (serving.keys.identify), None when the server has none."""
        return None if self.keys is None else self.keys.identify(request, given)

    def admit(self, key, texts):
        """Counts a request against its key's limits (429 beyond them); texts: what it asks to translate."""
        if key is not None:
            self.keys.admit(key, sum(len(text) for text in texts if isinstance(text, str)))

    def engine_for(self, key):
        """The engine for (beam_size, nbest, length_penalty): the served one, or a variant of it (at most
        VARIANTS are kept)."""
        beam_size, nbest, length_penalty = key
        if key not in self.variants:
            if len(self.variants) == VARIANTS:
                self.variants.popitem(last=False)
            self.variants[key] = self.engine.variant(nbest=nbest, beam_size=beam_size, length_penalty=length_penalty)
        self.variants.move_to_end(key)
        return self.variants[key]

    def decoding(self, body):
        """A request's decoding settings: the key (beam_size, nbest, length_penalty) of the engine that serves it."""
        hp, args = self.engine.hp, self.args
        beam = number(body, "beam_size", int, hp.beam_size, 1, args.max_beam_size)
        nbest = number(body, "nbest", int, 1, 1, args.max_beam_size)
        alpha = number(body, "length_penalty", float, hp.length_penalty, 0.0, 10.0)
        return max(beam, nbest), nbest, float(alpha)


def main(argv):
    explicit, args = parse_args(argv, description=__doc__.splitlines()[0], settings=SETTINGS,
                                add_arguments=add_serve_flags, epilog=cli.FROM_LOGDIR)
    for name in ("max_batch_tokens", "max_queue", "max_sentences", "max_chars", "max_beam_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.max_beam_size > MAX_BEAM:
        raise UserError(f"--max_beam_size must be at most {MAX_BEAM}, got {args.max_beam_size}")
    if not 0 <= args.max_wait_ms <= MAX_WAIT_MS:  # (NaN fails this too; inf would never answer)
        raise UserError(f"--max_wait_ms must be between 0 and {MAX_WAIT_MS:,}, got {args.max_wait_ms}")
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in [0, 65535] (0: any free port), got {args.port}")
    if args.ct2 is not None and "logdir" in explicit:
        note(f"--logdir {explicit['logdir']} is not read: --ct2 {args.ct2} holds the model and its settings")
    if args.max_connections < 1:
        raise UserError(f"--max_connections must be at least 1, got {args.max_connections}")
    for name in ("request_timeout", "shutdown_timeout"):
        if not 0 < getattr(args, name) <= MAX_TIMEOUT:
            raise UserError(f"--{name} must be more than 0 and at most {MAX_TIMEOUT:,} seconds, got "
                            f"{getattr(args, name)}")
    files = raise_open_files(args.max_connections + SPARE_FILES)
    if files < args.max_connections + SPARE_FILES:
        raise UserError(f"--max_connections {args.max_connections} needs {args.max_connections + SPARE_FILES} "
                        f"open files and this system allows {files} (ulimit -n): pass a lower --max_connections")
    keys = read_keys(args.api_keys) if args.api_keys else None
    hp = engines.settings(explicit, args)
    sock = listening_socket(args.host, args.port)
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if self.should_exit:  # a second SIGTERM (or Ctrl-C): the requests in flight end now, as at the timeout
                loop = asyncio.get_running_loop()
                loop.call_soon_threadsafe(lambda: [task.cancel() for task in self.server_state.tasks])
            super().handle_exit(sig, frame)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s serve.py: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(ended_at_shutdown)
    logging.getLogger("asyncio").addFilter(AcceptErrors())
    # a call's sentences are the batcher's choice: the engine takes them in one batch
    engine = engines.open_engine(dataclasses.replace(hp, batch_size=args.max_batch_tokens), args)
    engine(["Hallo"])  # traces (TensorFlow) or loads the decoder now, not at the first request
    server = Server(uvicorn.Config(make_app(Service(engine, args, keys), log), log_config=None, access_log=False,
                                   http=guarded(args.max_connections, args.request_timeout),
                                   timeout_keep_alive=5, timeout_graceful_shutdown=args.shutdown_timeout))
    log.info(f"serving {engine.name} ({engine.kind}) on {address(args.host, sock.getsockname()[1])}"
             f"{' (API keys from ' + args.api_keys + ')' if keys else ''}")
    if exposed(args.host, keys):
        log.warning(exposed(args.host, keys))
    # uvicorn answers SIGTERM by finishing the requests in flight, then raises it again: it ends here, exit code 0
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    server.run(sockets=[sock])


if __name__ == "__main__":
    run(main)

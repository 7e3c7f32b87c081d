"""Serves a trained model over HTTP: a JSON API that batches concurrent requests, and a page to try it.

    python serve.py --logdir logdir                  # the TensorFlow model, on http://127.0.0.1:8000
    python serve.py --ct2 exported_ct2 --port 8080   # its CTranslate2 export (export.py --format ctranslate2)
    curl -s 127.0.0.1:8000/translate -H 'Content-Type: application/json' -d '{"text": "Zwei Hunde im Schnee."}'

POST /translate  {"text": "..." or ["...", ...], "beam_size"?, "nbest"?, "length_penalty"?}
                 -> {"translations": [...]} in the input's order, and with nbest
                 {"nbest": [[{"translation", "score"}, ...], ...]}: what translate.py prints
POST /attention  {"text": "...", "translation"?: "..."} -> the source and target tokens and the
                 cross-attention weights of every layer and head (for the best translation, or the one given)
GET  /health     the engine, the checkpoint, the vocab's digest, the queue
GET  /           a page to type German text and see the translations, the n-best lists and the attention

The sentences of concurrent requests are merged into one decoder call of at
most --max_batch_tokens tokens (padding included), waiting at most
--max_wait_ms for more to come; the model runs in a thread of its own, off the
event loop. At most --max_queue sentences wait: beyond, a request gets 503
and Retry-After at once. A bad request (not JSON or UTF-8, a wrong type, an
unknown field, empty text, more than --max_sentences sentences or
--max_chars characters, a beam wider than --max_beam_size, a sentence too
long to translate) gets a JSON error naming the field and the limit and never
reaches the model; every request is one log line. SIGTERM stops accepting
requests, finishes those in flight and exits with code 0.
"""
import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import signal
import time

import cli
import engine
import engines
import serving.page
from serving.batching import Batcher, QueueFull
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
    engines.add_model_flags(parser, verb="serve", ensemble=True)


class Service:
    """The endpoints: the engine, its variants for other decoding settings, the batcher and the limits."""

    def __init__(self, engine, args):
        self.engine, self.args = engine, args
        self.variants = collections.OrderedDict()  # decoding settings -> engine, the most recently used last
        hp = engine.hp  # the served settings: the engine itself, whose decoder main() has traced already
        self.variants[(hp.beam_size, engine.nbest, float(hp.length_penalty))] = engine
        self.batcher = None  # made on the event loop (lifespan)
        self.body_limit = 4 * args.max_chars + 4096  # UTF-8 takes at most 4 bytes a character, JSON some more

    async def translate(self, request):
        """POST /translate."""
        sentences, listed, key, with_nbest = self.parse_translate(await read_json(request, self.body_limit))
        rows = self.encode(sentences, listed)
        words = [i for i, row in enumerate(rows) if row is not None]  # the others are empty once cleaned
        try:
            futures = self.batcher.submit(key, [rows[i] for i in words])
        except QueueFull:
            raise BadRequest(503, None, f"the queue is full ({self.args.max_queue} sentences wait); retry in a "
                             "moment", self.args.max_queue, headers={"Retry-After": "1"}) from None
        results = [[("", 0.0)] * key[1] for _ in rows]
        for i, result in zip(words, await asyncio.gather(*futures)):
            results[i] = result
        answer = {"translations": [hypotheses[0][0] for hypotheses in results]}
        if with_nbest:
            answer["nbest"] = [[{"translation": text, "score": score} for text, score in hypotheses]
                               for hypotheses in results]
        return answer

    async def attention(self, request):
        """POST /attention: the cross-attention of every layer and head, rounded to 4 decimals."""
        body = await read_json(request, self.body_limit)
        check_fields(body, {"text", "translation"})
        if not (isinstance(body["text"], str) and body["text"].strip()):
            raise BadRequest(422, "text", "must be a non-empty string")
        if not isinstance(body.get("translation", ""), str):  # (an empty translation is one)
            raise BadRequest(422, "translation", "must be a string")
        for field in ("text", "translation"):
            problem = unicode_problem(body.get(field, ""))
            if problem:
                raise BadRequest(422, field, f"is not valid Unicode ({problem}); send UTF-8 text")
        if len(body["text"]) + len(body.get("translation", "")) > self.args.max_chars:
            raise BadRequest(413, "text", f"is longer than --max_chars {self.args.max_chars}", self.args.max_chars)
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
        served = self.engine
        return {"status": "ok", "engine": served.kind, "model": served.name,
                "checkpoints": [os.path.basename(path) for path in served.checkpoints],  # names, not where they are
                "vocab_sha256": served.vocab_sha256, "queue": len(self.batcher.jobs),
                "max_queue": self.args.max_queue, "decoder_calls": self.batcher.calls}

    async def page(self):
        """GET /."""
        from fastapi.responses import HTMLResponse

        return HTMLResponse(serving.page.html(max_chars=self.args.max_chars, max_sentences=self.args.max_sentences,
                                              max_beam_size=self.args.max_beam_size,
                                              beam_size=self.engine.hp.beam_size))

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

    def parse_translate(self, body):
        """A /translate request's JSON -> (sentences, whether it was a list, decoding settings key, nbest asked)."""
        hp, args = self.engine.hp, self.args
        check_fields(body, {"text", "beam_size", "nbest", "length_penalty"})
        text = body["text"]
        listed = isinstance(text, list)
        sentences = text if listed else [text]
        if not listed and not isinstance(text, str):
            raise BadRequest(422, "text", "must be a string or a list of strings")
        if not sentences:
            raise BadRequest(422, "text", "is an empty list; give at least one sentence")
        if len(sentences) > args.max_sentences:
            raise BadRequest(413, "text", f"has {len(sentences)} sentences, more than --max_sentences "
                             f"{args.max_sentences}", args.max_sentences)
        for i, sentence in enumerate(sentences):
            where = f"text[{i}]" if listed else "text"
            if not isinstance(sentence, str):
                raise BadRequest(422, where, "must be a string")
            if not sentence.strip():
                raise BadRequest(422, where, "is empty; give a German sentence")
            problem = unicode_problem(sentence)
            if problem:
                raise BadRequest(422, where, f"is not valid Unicode ({problem}); send UTF-8 text")
        if sum(map(len, sentences)) > args.max_chars:
            raise BadRequest(413, "text", f"has {sum(map(len, sentences)):,} characters, more than --max_chars "
                             f"{args.max_chars}", args.max_chars)
        beam = number(body, "beam_size", int, hp.beam_size, 1, args.max_beam_size)
        nbest = number(body, "nbest", int, 1, 1, args.max_beam_size)
        alpha = number(body, "length_penalty", float, hp.length_penalty, 0.0, 10.0)
        return sentences, listed, (max(beam, nbest), nbest, float(alpha)), "nbest" in body

    def encode(self, sentences, listed):
        """Each sentence's ids ending in </S>, or None for one empty once cleaned: encoded once, here, they travel
        with the request to the engine. One too long to translate is refused (413) before it reaches the model."""
        rows = []
        for i, sentence in enumerate(sentences):
            try:
                rows += self.engine.encode_lines([sentence])
            except engine.TooLong as e:
                raise BadRequest(413, f"text[{i}]" if listed else "text",
                                 f"has {e.tokens:,} tokens, more than the {e.limit} a translation may have "
                                 "(--decode_maxlen)", e.limit) from None
        return rows


def make_app(service):
    """The FastAPI application: the service's endpoints, one log line per request, errors as JSON."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    args = service.args

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher = Batcher(service.engine_for, args.max_batch_tokens, args.max_wait_ms / 1000, args.max_queue)
        task = asyncio.create_task(service.batcher.run())
        yield
        task.cancel()  # after uvicorn has waited for every request in flight
        service.batcher.thread.shutdown(wait=True)

    app = FastAPI(title="German -> English translation", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def log_line(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        said = getattr(request.state, "error", "")
        log.info(f"{request.method} {request.url.path} {response.status_code} "
                 f"{1000 * (time.perf_counter() - start):.0f} ms{': ' + said if said else ''}")
        return response

    @app.exception_handler(BadRequest)
    async def refused(request: Request, error: BadRequest):
        request.state.error = error.response()["error"]
        return JSONResponse(error.response(), status_code=error.status, headers=error.headers)

    async def translate(request: Request):
        return await service.translate(request)

    async def attention(request: Request):
        return await service.attention(request)

    app.post("/translate")(translate)
    app.post("/attention")(attention)
    app.api_route("/health", methods=["GET", "HEAD"])(service.health)  # uptime checkers send HEAD
    app.api_route("/", methods=["GET", "HEAD"])(service.page)
    return app


def address(host, port):
    """The service's URL: an IPv6 address in brackets, as URLs write it (http://[::1]:8000)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listening_socket(host, port):
    """A socket listening on host:port (port 0: a free one), or a one-line error."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # from now on connections wait in the kernel's queue until uvicorn accepts them
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port or --host") from None
    return sock


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
    hp = engines.settings(explicit, args)
    sock = listening_socket(args.host, args.port)
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s serve.py: %(message)s")
    # a call's sentences are the batcher's choice: the engine takes them in one batch
    engine = engines.open_engine(dataclasses.replace(hp, batch_size=args.max_batch_tokens), args)
    engine(["Hallo"])  # traces (TensorFlow) or loads the decoder now, not at the first request
    server = uvicorn.Server(uvicorn.Config(make_app(Service(engine, args)), log_config=None, access_log=False,
                                           timeout_graceful_shutdown=None))
    log.info(f"serving {engine.name} ({engine.kind}) on {address(args.host, sock.getsockname()[1])}")
    # uvicorn answers SIGTERM by finishing the requests in flight, then raises it again: it ends here, exit code 0
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    server.run(sockets=[sock])


if __name__ == "__main__":
    run(main)

"""serve.py's web application: the routes and their OpenAPI description, the line each request leaves in the log
and its metrics, requests from elsewhere refused, errors as JSON (the endpoints themselves are serve.Service's)."""
import asyncio
import contextlib
import time

from serving import schemas
from serving.batching import Batcher
from serving.requests import BadRequest, foreign

DOCS = """A German -> English Transformer, trained with this project's train.py.

* [The page](/) to try it: paragraphs, n-best lists, attention.
* Its own API: `/translate`, `/attention`, `/health`, `/metrics` (Prometheus).
* [LibreTranslate](https://libretranslate.com/docs/)'s API under `/libretranslate/`: give clients the base URL
  `http://HOST:PORT/libretranslate/`.
* With `--api_keys`, send a key as `Authorization: Bearer KEY` (or LibreTranslate's `api_key` field)."""


def make_app(service, log):
    """The FastAPI application of serve.Service: its endpoints and LibreTranslate's, one line in `log` and the
    metrics of every request, errors as JSON, the OpenAPI description and its /docs page (served from here,
    offline)."""
    from fastapi import Request
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from fastapi_offline import FastAPIOffline

    args = service.args

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher = Batcher(service.engine_for, args.max_batch_tokens, args.max_wait_ms / 1000, args.max_queue,
                                  on_call=service.metrics.called)
        task = asyncio.create_task(service.batcher.run())
        yield
        task.cancel()  # after uvicorn has waited for every request in flight
        service.batcher.thread.shutdown(wait=True)

    app = FastAPIOffline(title="German -> English translation", description=DOCS, version="1",
                         lifespan=lifespan, docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    routes = set()

    if args.allowed_origins:  # their pages may read the answers too
        app.add_middleware(CORSMiddleware, allow_origins=args.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def log_line(request: Request, call_next):
        start = time.perf_counter()
        refused = foreign(request.headers, args.host, args.allowed_origins)
        if refused:
            request.state.error = refused[1]
            response = JSONResponse({"error": refused[1], "field": None}, status_code=refused[0])
        else:
            response = await call_next(request)
        seconds = time.perf_counter() - start
        said, key = getattr(request.state, "error", ""), getattr(request.state, "key", "")
        route = request.url.path if request.url.path in routes else "other"  # (a bounded set of labels)
        service.metrics.answered(route, response.status_code, seconds)
        log.info(f"{request.method} {request.url.path} {response.status_code} {1000 * seconds:.0f} ms"
                 f"{' (' + key + ')' if key else ''}{': ' + said if said else ''}")
        return response

    @app.exception_handler(BadRequest)
    async def refused(request: Request, error: BadRequest):
        request.state.error = error.response()["error"]
        return JSONResponse(error.response(), status_code=error.status, headers=error.headers)

    def route(path, handler, methods, summary, answer=None, request_body=None, errors=(), **extra):
        """Adds an endpoint with its OpenAPI description."""
        routes.add(path)
        responses = {**({200: {"model": answer}} if answer else {}), **schemas.errors(*errors)}
        app.api_route(path, methods=methods, summary=summary, responses=responses, openapi_extra=request_body,
                      **extra)(handler)

    async def translate(request: Request):
        return await service.translate(request)

    async def attention(request: Request):
        return await service.attention(request)

    async def lt_translate(request: Request):
        return await service.libretranslate.translate(request)

    async def lt_languages(request: Request):
        return await service.libretranslate.languages(request)

    async def lt_detect(request: Request):
        return await service.libretranslate.detect(request)

    keyed = (401, 429) if service.keys else ()  # (403 is every endpoint's: an unknown key, another site's page)
    route("/translate", translate, ["POST"], "Translate German text (sentences or paragraphs)",
          schemas.TranslateAnswer, schemas.body(schemas.TranslateRequest),
          (400, 403, *keyed, 408, 413, 415, 422, 503))
    route("/attention", attention, ["POST"], "The cross-attention of one sentence's translation",
          schemas.AttentionAnswer, schemas.body(schemas.AttentionRequest),
          (400, 403, *keyed, 408, 413, 415, 422, 501))
    route("/health", service.health, ["GET", "HEAD"], "The engine, the model and the queue", schemas.Health)
    route("/metrics", service.scrape, ["GET"], "Prometheus metrics (text format)", response_class=PlainTextResponse)
    route("/", service.page, ["GET", "HEAD"], "The page to try the model", response_class=HTMLResponse)
    route("/libretranslate/translate", lt_translate, ["POST"], "LibreTranslate: translate",
          schemas.LibreTranslateAnswer, schemas.body(schemas.LibreTranslateRequest, form=True),
          (400, 403, *keyed, 408, 413, 415, 503), tags=["LibreTranslate"])
    route("/libretranslate/languages", lt_languages, ["GET", "POST"], "LibreTranslate: the languages",
          list[schemas.Language], None, (400, 403, *keyed, 408), tags=["LibreTranslate"])
    route("/libretranslate/detect", lt_detect, ["POST"], "LibreTranslate: detect the language (German, always)",
          list[schemas.DetectedLanguage], schemas.body(schemas.LibreTranslateDetectRequest, form=True),
          (400, 403, *keyed, 408, 413, 415), tags=["LibreTranslate"])
    return app


def ended_at_shutdown(record):
    """A logging filter: a request that --shutdown_timeout ended is one line, not uvicorn's traceback."""
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
        record.msg, record.args, record.exc_info = ("a request in flight was ended: --shutdown_timeout passed (or "
                                                    "a second SIGTERM came)"), (), None
    return True

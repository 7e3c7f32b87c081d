"""serve.py in its ecosystem, over real HTTP on 127.0.0.1, with --api_keys: LibreTranslate's API as its client
library (libretranslatepy) calls it, API keys and their limits, Prometheus metrics read with prometheus-client's
own parser, and the OpenAPI description and its offline /docs page."""
import json
import urllib.error
import urllib.request

import pytest

from conftest import Server, get

pytestmark = pytest.mark.e2e

OPEN = "0123456789abcdef-open"  # no limits
LIMITED = "limited-key-0123456789"  # 3 requests a minute
SHORT = "short-key-0123456789ab"  # 40 characters a minute


def call(url, body=None, key=None, method=None, form=False):
    """(status, JSON answer, headers) of a request with a JSON (or form) body and an optional Bearer key."""
    import urllib.parse

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


@pytest.fixture(scope="module")
def keyed(trained_model, tmp_path_factory):
    """The session's model behind serve.py with three keys: (server, German test sentences, capitalized)."""
    directory, flags = trained_model
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# keys for the tests\n{OPEN}\n{LIMITED} requests_per_minute=3\n"
                    f"{SHORT} characters_per_minute=40\n", encoding="utf-8")
    german = [line.capitalize() for line in (directory / "test.de").read_text(encoding="utf-8").splitlines()]
    server = Server(*flags, "--api_keys", str(keys), "--decode_maxlen", "20", "--max_beam_size", "4")
    yield server, german
    code, log = server.stop()
    assert code == 0, log[-2000:]
    assert "Traceback" not in log and not any(key in log for key in (OPEN, LIMITED, SHORT))  # never a key logged
    assert "(key on line 2)" in log  # the key's line names it


def test_a_libretranslate_client_translates_lists_languages_and_detects(keyed):
    from libretranslatepy import LibreTranslateAPI

    server, german = keyed
    client = LibreTranslateAPI(server.url + "/libretranslate/", api_key=OPEN)
    text = f"{german[0]}. {german[1]}."
    _, ours, _ = call(server.url + "/translate", {"text": text}, key=OPEN)
    assert client.translate(text, "de", "en") == ours["translations"][0]
    assert client.translate(text, "auto", "en") == ours["translations"][0]
    assert client.languages() == [{"code": "de", "name": "German", "targets": ["en"]},
                                  {"code": "en", "name": "English", "targets": []}]
    assert client.detect(german[0]) == [{"language": "de", "confidence": 0.0}]  # one language; nothing detected
    for source, target, field in (("fr", "en", "source"), ("de", "es", "target")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            client.translate(text, source, target)
        answer = json.loads(refused.value.read())
        assert refused.value.code == 400 and answer["error"].startswith(f"{field}: ")
    assert call(server.url + "/libretranslate/translate", {"source": "de"})[0] == 401  # the key first, then q
    for key, status in ((None, 401), ("a-key-nobody-was-given", 403)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            LibreTranslateAPI(server.url + "/libretranslate/", api_key=key).translate(text, "de", "en")
        assert refused.value.code == status and "api_key" in json.loads(refused.value.read())["error"]


def test_libretranslate_lists_of_texts_alternatives_and_its_errors(keyed):
    server, german = keyed
    url = server.url + "/libretranslate/translate"
    _, ours, _ = call(server.url + "/translate", {"text": german[:2], "nbest": 2, "beam_size": 4}, key=OPEN)
    status, answer, _ = call(url, {"q": german[:2], "source": "auto", "target": "en", "alternatives": 1,
                                   "api_key": OPEN})
    assert status == 200
    assert answer["translatedText"] == ours["translations"]
    assert answer["alternatives"] == [[s[0]["nbest"][1]["translation"]] for s in ours["sentences"]]
    assert answer["detectedLanguage"] == [{"language": "de", "confidence": 0.0}] * 2
    status, answer, _ = call(url, {"q": german[0], "source": "de", "target": "en", "alternatives": "1",
                                   "api_key": OPEN}, form=True)  # form fields carry numbers as text
    assert status == 200 and answer["alternatives"] == [ours["sentences"][0][0]["nbest"][1]["translation"]]
    for body, words in (({"q": "x", "format": "html"}, "format: 'html' is not translated here"),
                        ({"source": "de"}, "q: is missing"), ({"q": 5}, "q: must be a string or a list"),
                        ({"q": "x", "alternatives": 9}, "alternatives: must be between 0 and 3")):
        status, answer, _ = call(url, {**body, "api_key": OPEN})
        assert status == 400 and answer["error"].startswith(words), answer


def test_keys_are_asked_for_everywhere_but_health_metrics_page_and_docs(keyed):
    server, german = keyed
    status, answer, headers = call(server.url + "/translate", {"text": german[0]})
    assert status == 401 and answer["field"] == "api_key" and headers["WWW-Authenticate"] == "Bearer"
    assert call(server.url + "/translate", {"text": german[0]}, key=OPEN + "x")[0] == 403
    assert call(server.url + "/attention", {"text": german[0]})[0] == 401
    assert call(server.url + "/translate", {"text": german[0]}, key=OPEN)[0] == 200
    for path in ("/health", "/metrics", "/", "/docs", "/openapi.json"):
        assert get(server.url + path)[0] == 200


def test_limits_per_key_answer_429_with_retry_after_and_leave_other_keys_alone(keyed):
    server, german = keyed
    statuses = [call(server.url + "/translate", {"text": german[0]}, key=LIMITED)[0] for _ in range(3)]
    status, answer, headers = call(server.url + "/translate", {"text": german[0]}, key=LIMITED)
    assert statuses == [200, 200, 200] and status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60 and "requests_per_minute" in answer["error"]
    assert call(server.url + "/translate", {"text": german[0]}, key=OPEN)[0] == 200  # another key: unaffected
    assert call(server.url + "/translate", {"text": "Eins zwei drei vier fünf"}, key=SHORT)[0] == 200  # 24 of 40
    status, answer, headers = call(server.url + "/translate", {"text": "Eins zwei drei vier"}, key=SHORT)
    assert status == 429 and "characters_per_minute" in answer["error"] and int(headers["Retry-After"]) >= 1
    status, answer, _ = call(server.url + "/translate", {"text": "Eins " * 9}, key=SHORT)  # 45: never fits
    assert status == 413 and "characters_per_minute 40" in answer["error"]


def test_metrics_parse_as_prometheus_text_and_move_with_requests(keyed):
    from prometheus_client.parser import text_string_to_metric_families

    server, german = keyed

    def scrape():
        status, text = get(server.url + "/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    before = scrape()
    assert call(server.url + "/translate", {"text": f"{german[0]}. {german[1]}. {german[2]}."}, key=OPEN)[0] == 200
    assert call(server.url + "/translate", {"text": ""}, key=OPEN)[0] == 422
    after = scrape()

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0)

    assert moved("translation_http_requests_total", route="/translate", status="200") == 1
    assert moved("translation_http_requests_total", route="/translate", status="422") == 1
    assert moved("translation_sentences_total") == 3
    assert moved("translation_source_tokens_total") >= 3 + 3  # words and an </S> each
    assert moved("translation_decoder_calls_total") >= 1
    assert moved("translation_decoder_batch_sentences_sum") == 3
    assert moved("translation_queue_wait_seconds_count") == 3
    assert moved("translation_http_request_duration_seconds_count", route="/translate") == 2
    assert after[("translation_queue_sentences", ())] == 0
    info = next(labels for (name, labels) in after if name == "translation_model_info")
    assert dict(info)["engine"] == "tensorflow" and dict(info)["checkpoints"]


def test_openapi_describes_every_endpoint_and_docs_are_served_from_here(keyed):
    server, _ = keyed
    status, text = get(server.url + "/openapi.json")
    spec = json.loads(text)
    assert set(spec["paths"]) == {"/translate", "/attention", "/health", "/metrics", "/",
                                  "/libretranslate/translate", "/libretranslate/languages", "/libretranslate/detect"}
    translate = spec["paths"]["/translate"]["post"]
    assert "text" in translate["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"200", "401", "403", "413", "422", "429", "503"} <= set(translate["responses"])
    form = spec["paths"]["/libretranslate/translate"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in form
    _, page = get(server.url + "/docs")
    assert "cdn" not in page.lower() and "/static-offline-docs/swagger-ui-bundle.js" in page
    assert get(server.url + "/static-offline-docs/swagger-ui-bundle.js")[0] == 200

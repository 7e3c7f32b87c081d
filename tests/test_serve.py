"""serve.py over real HTTP on 127.0.0.1: translate.py's translations, batching, bad requests, a full queue, SIGTERM."""
import concurrent.futures
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Server, get, post

pytestmark = pytest.mark.e2e


def translate_py_nbest(argv, german):
    """translate.py's 2-best lists (beam 2) of the sentences, run as a user runs it: rows [index, translation,
    score]."""
    result = subprocess.run([sys.executable, str(ROOT / "translate.py"), *argv, "--beam_size", "2", "--nbest", "2",
                             *german], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line.split(" ||| ") for line in result.stdout.splitlines()]


def nbest_rows(answer):
    """A /translate answer's n-best lists (texts of one sentence each) as translate.py's rows."""
    assert all(len(sentences) == 1 for sentences in answer["sentences"])
    return [[str(i), h["translation"], f"{h['score']:.4f}"] for i, (sentence,) in enumerate(answer["sentences"])
            for h in sentence["nbest"]]


@pytest.fixture(scope="module")
def served(trained_model):
    """The session's tiny model behind serve.py: (server, flags, translate.py's translations of the test set)."""
    directory, flags = trained_model
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()
    expected = translate_py_nbest([*flags, "--decode_maxlen", "20"], german[:4])
    server = Server(*flags, "--max_sentences", "8", "--max_chars", "400", "--max_beam_size", "6",
                    "--decode_maxlen", "20")
    yield server, german, expected
    code, log = server.stop()
    assert code == 0, log[-2000:]


def test_translations_and_nbest_lists_are_translate_py_s(served):
    server, german, expected = served
    status, answer, _ = post(server.url + "/translate", {"text": german[:4], "beam_size": 2, "nbest": 2})
    assert status == 200
    assert answer["translations"] == [expected[2 * i][1] for i in range(4)]
    assert nbest_rows(answer) == expected
    status, answer, _ = post(server.url + "/translate", {"text": german[0], "beam_size": 2})
    assert status == 200 and answer == {"translations": [expected[0][1]]}  # a list even for one string


def test_paragraphs_are_translated_sentence_by_sentence_as_translate_py_split_sentences(served, trained_model,
                                                                                       capsys):
    import translate

    server, german, _ = served
    _, flags = trained_model
    first = [g.capitalize() for g in german]  # (a sentence begins with a capital letter)
    paragraph = f"{first[0]}. {first[1]}!  Dr. {german[2]}?\n{first[3]}."  # "Dr." must not end a sentence
    lines = paragraph.split("\n")
    capsys.readouterr()
    translate.main([*flags, "--decode_maxlen", "20", "--split_sentences", *lines])
    expected = capsys.readouterr().out
    status, answer, _ = post(server.url + "/translate", {"text": [paragraph, german[4]], "nbest": 1})
    assert status == 200
    assert answer["translations"][0] == expected.rstrip("\n")  # the line break kept, each sentence translated
    assert [s["source"] for s in answer["sentences"][0]] == [f"{first[0]}.", f"{first[1]}!", f"Dr. {german[2]}?",
                                                             f"{first[3]}."]
    assert len(answer["sentences"][1]) == 1
    two = f"{german[0]}. {german[1]}!"
    translate.main([*flags, "--decode_maxlen", "20", two])  # without --split_sentences: one sentence
    status, whole, _ = post(server.url + "/translate", {"text": two, "split": False})
    assert status == 200 and whole["translations"] == [capsys.readouterr().out.rstrip("\n")]
    status, refused, _ = post(server.url + "/attention", {"text": paragraph})
    assert status == 422 and "holds 4 sentences" in refused["error"]


def test_concurrent_requests_share_decoder_calls(served):
    server, german, _ = served
    before = json.loads(get(server.url + "/health")[1])["decoder_calls"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda s: post(server.url + "/translate", {"text": s}), german[:8]))
    assert all(status == 200 for status, _, _ in answers)
    calls = json.loads(get(server.url + "/health")[1])["decoder_calls"] - before
    assert calls < 8  # sentences of different requests went through one call


def test_attention_has_every_layer_and_head(served):
    server, german, _ = served
    status, answer, _ = post(server.url + "/attention", {"text": german[0]})
    assert status == 200
    weights = answer["attention"]
    assert (answer["layers"], answer["heads"]) == (len(weights), len(weights[0])) == (1, 2)
    assert len(weights[0][0]) == len(answer["target"]) and len(weights[0][0][0]) == len(answer["source"])
    assert answer["source"][-1] == "</S>" and answer["target"][0] == "<S>"
    assert all(abs(sum(row) - 1) < 1e-3 for row in weights[0][1])  # each query's weights sum to 1
    status, forced, _ = post(server.url + "/attention", {"text": german[0], "translation": "one two"})
    assert status == 200 and forced["target"] == ["<S>", "one", "two"]


def test_head_requests_and_a_health_that_names_no_path(served):
    import urllib.request

    server, _, _ = served
    for path in ("/", "/health"):  # uptime checkers send HEAD
        with urllib.request.urlopen(urllib.request.Request(server.url + path, method="HEAD"), timeout=60) as r:
            assert r.status == 200 and r.read() == b""
    health = json.loads(get(server.url + "/health")[1])
    assert health["checkpoints"] and not any("/" in name for name in health["checkpoints"])


ATTENTION_BAD = [
    ({"text": "123 !!! ..."}, 422, "text", "empty once cleaned"),
    ({"text": "eins " * 30}, 413, "text", "31 tokens, more than the 20"),
    ({"text": "eins", "translation": "one " * 30}, 413, "translation", "31 tokens, more than the 20"),
    ({"text": "eins", "translation": 3}, 422, "translation", "must be a string"),
    ({"text": "Hallo \ud800"}, 422, "text", "not valid Unicode (a lone surrogate, U+D800"),
]


@pytest.mark.parametrize("body, status, field, words", ATTENTION_BAD, ids=[b[3] for b in ATTENTION_BAD])
def test_attention_checks_its_request_before_the_model_thread_as_translate_does(served, body, status, field, words):
    server, _, _ = served
    got, answer, _ = post(server.url + "/attention", body)
    assert got == status and answer["field"] == field and words in answer["error"], answer
    assert get(server.url + "/health")[0] == 200


BAD = [
    (None, b'{"text": "eins"', 400, None, "not JSON"),
    (None, b'{"text": "Gr\xfc\xdfe"}', 400, None, "not UTF-8"),
    ([1, 2], None, 422, None, "JSON object"),
    ({"text": 5}, None, 422, "text", "a string or a list of strings"),
    ({"text": ["eins", 2]}, None, 422, "text[1]", "must be a string"),
    ({"text": "eins", "colour": "red"}, None, 422, "colour", "not a field"),
    ({"beam_size": 2}, None, 422, "text", "missing"),
    ({"text": "   "}, None, 422, "text", "empty"),
    ({"text": ["eins", "Hallo \ud800 Welt"]}, None, 422, "text[1]", "not valid Unicode (a lone surrogate, U+D800, at "
                                                                     "character 7)"),
    (None, b"[" * 5000 + b"]" * 500, 400, None, "nested more than 32 levels deep"),
    ({"text": []}, None, 422, "text", "empty list"),
    ({"text": ["eins"] * 9}, None, 413, "text", "--max_sentences 8"),
    ({"text": "eins " * 100}, None, 413, "text", "--max_chars 400"),
    ({"text": ["eins", "zwei " * 30]}, None, 413, "text[1]", "31 tokens, more than the 20 a translation may have"),
    ({"text": "Eins. Zwei " + "zwei " * 29}, None, 413, "text", "sentence 2 has 31 tokens, more than the 20"),
    ({"text": "Eins. " * 9}, None, 413, "text", "has 9 sentences, more than --max_sentences 8"),
    ({"text": "eins", "split": "yes"}, None, 422, "split", "true or false"),
    ({"text": "eins", "beam_size": 10 ** 9}, None, 422, "beam_size", "between 1 and 6"),
    ({"text": "eins", "beam_size": "4"}, None, 422, "beam_size", "an integer"),
    ({"text": "eins", "nbest": 0}, None, 422, "nbest", "between 1 and 6"),
    ({"text": "eins", "length_penalty": "x"}, None, 422, "length_penalty", "a number"),
]


@pytest.mark.parametrize("body, raw, status, field, words", BAD, ids=[b[4] for b in BAD])
def test_bad_requests_get_a_json_error_and_never_reach_the_model(served, body, raw, status, field, words):
    server, _, _ = served
    before = json.loads(get(server.url + "/health")[1])["decoder_calls"]
    got, answer, _ = post(server.url + "/translate", body, raw)
    assert got == status and answer["field"] == field and words in answer["error"]
    assert "Traceback" not in json.dumps(answer)
    assert json.loads(get(server.url + "/health")[1])["decoder_calls"] == before


def test_a_full_queue_answers_503_at_once_and_sigterm_loses_no_request(trained_model):
    _, flags = trained_model
    server = Server(*flags, "--max_queue", "3", "--max_wait_ms", "1500", "--max_batch_tokens", "100000")
    status, answer, headers = post(server.url + "/translate", {"text": ["eins", "zwei", "drei", "vier"]})
    assert status == 503 and headers["Retry-After"] == "1" and answer["limit"] == 3
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        pending = [pool.submit(post, server.url + "/translate", {"text": s}) for s in ("eins", "zwei", "drei")]
        time.sleep(0.5)  # the three wait for the batch to fill or for 1.5 s
        start = time.time()
        status, answer, _ = post(server.url + "/translate", {"text": "vier"})
        assert status == 503 and time.time() - start < 1  # no hang
        code, log = server.stop(signal.SIGTERM)  # while they are still waiting
        answers = [future.result() for future in pending]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert all(answer["translations"][0] for _, answer, _ in answers)
    assert code == 0, log[-2000:]
    assert "Traceback" not in log
    assert sum(" 503 " in line for line in log.splitlines()) == 2  # one log line per request


def test_a_ctranslate2_export_is_served_as_translate_py_ct2_translates_it(trained_model, tmp_path):
    import export
    directory, flags = trained_model
    export.main([*flags, "--format", "ctranslate2", "--out", str(tmp_path / "ct2")])
    german = (directory / "test.de").read_text(encoding="utf-8").splitlines()[:4]
    expected = translate_py_nbest(["--ct2", str(tmp_path / "ct2")], german)
    server = Server("--ct2", str(tmp_path / "ct2"))
    try:
        status, answer, _ = post(server.url + "/translate", {"text": german, "beam_size": 2, "nbest": 2})
        assert status == 200
        assert nbest_rows(answer) == expected
        assert json.loads(get(server.url + "/health")[1])["engine"] == "ctranslate2"
        status, answer, _ = post(server.url + "/attention", {"text": german[0]})
        assert status == 501 and "does not return attention weights" in answer["error"]
    finally:
        code, log = server.stop()
    assert code == 0 and "Traceback" not in log, log[-2000:]

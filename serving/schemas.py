"""The shapes of serve.py's requests and answers, for its OpenAPI description (/openapi.json, /docs).

The endpoints read their bodies themselves (bounded in size and depth, every
field checked with a message that names it: serving.requests); these models
only describe them, so that /docs shows what to send and what comes back.
"""
from typing import Optional, Union

from pydantic import BaseModel, Field


class Error(BaseModel):
    error: str = Field(description="what is wrong, naming the field, and how to fix it")
    field: Optional[str] = Field(None, description="the request's field at fault, if one is")
    limit: Optional[float] = Field(None, description="the limit it went beyond, if one did")


class TranslateRequest(BaseModel):
    text: Union[str, list[str]] = Field(description="German text: a sentence, a paragraph or several, or a list "
                                                    "of them", examples=["Zwei Hunde spielen im Schnee."])
    beam_size: Optional[int] = Field(None, ge=1, description="beam width (default: the model's)")
    nbest: Optional[int] = Field(None, ge=1, description="translations per sentence; asks for \"sentences\"")
    length_penalty: Optional[float] = Field(None, ge=0, le=10, description="the beam's length penalty")
    split: bool = Field(True, description="split each text into sentences (false: each text is one sentence)")


class Hypothesis(BaseModel):
    translation: str
    score: float = Field(description="the beam's score (length-normalized log-probability)")


class Sentence(BaseModel):
    source: str = Field(description="one German sentence of the text")
    nbest: list[Hypothesis] = Field(description="its translations, best first")


class TranslateAnswer(BaseModel):
    translations: list[str] = Field(description="one per text, in the text's own whitespace and line breaks")
    sentences: Optional[list[list[Sentence]]] = Field(None, description="with nbest: each text's sentences")


class AttentionRequest(BaseModel):
    text: str = Field(description="one German sentence", examples=["Zwei Hunde spielen im Schnee."])
    translation: Optional[str] = Field(None, description="the English to show the attention of (default: the "
                                                         "model's best translation)")


class AttentionAnswer(BaseModel):
    source: list[str] = Field(description="the German tokens, </S> last")
    target: list[str] = Field(description="the decoder's inputs, <S> first")
    translation: str
    layers: int
    heads: int
    attention: list[list[list[list[float]]]] = Field(description="[layer][head][target][source] weights")


class Health(BaseModel):
    status: str
    engine: str = Field(description="tensorflow or ctranslate2")
    model: str
    checkpoints: list[str]
    vocab_sha256: str
    queue: int = Field(description="sentences waiting now")
    max_queue: int
    decoder_calls: int


class LibreTranslateRequest(BaseModel):
    q: Union[str, list[str]] = Field(description="German text, or a list of texts (JSON only)")
    source: str = Field("auto", description="de, or auto (this server reads German only)")
    target: str = Field("en", description="en")
    format: str = Field("text", description="text (html is not translated here)")
    alternatives: int = Field(0, ge=0, description="other translations to return besides the best")
    api_key: Optional[str] = Field(None, description="the key, when the server has --api_keys")


class DetectedLanguage(BaseModel):
    language: str
    confidence: float = Field(description="0 to 100; this server does not detect and says 0")


class LibreTranslateAnswer(BaseModel):
    translatedText: Union[str, list[str]]
    alternatives: Optional[Union[list[str], list[list[str]]]] = None
    detectedLanguage: Optional[Union[DetectedLanguage, list[DetectedLanguage]]] = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


class LibreTranslateDetectRequest(BaseModel):
    q: str
    api_key: Optional[str] = None


def body(model, form=False):
    """An operation's requestBody (openapi_extra), from a model's JSON schema: JSON, and form fields too."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    content = {"application/json": {"schema": schema}}
    if form:
        content["application/x-www-form-urlencoded"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


def errors(*statuses):
    """An operation's error answers, all of the Error shape."""
    meaning = {400: "not JSON (or form fields), not UTF-8, or a field of the wrong value", 401: "no API key",
               403: "an unknown API key, or a request from another site's page (--allowed_origins)",
               408: "the body did not arrive within --request_timeout",
               413: "too long: characters, sentences or tokens beyond a limit",
               415: "a body of another content type", 422: "a field of the wrong type or value",
               429: "the key's limit per minute is reached (Retry-After says when to retry)",
               501: "not offered by this engine", 503: "the queue is full (Retry-After)"}
    return {status: {"model": Error, "description": meaning[status]} for status in statuses}

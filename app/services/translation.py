"""Prompt translation to English: one `Translator` interface, three HTTP back ends, the splitter.

Midjourney reads English. When a prompt holds CJK text, `translate_prompt` sends only its
words to the translator: leading image URLs and the trailing `--params` go through byte for
byte (a translator would mangle `--ar 16:9` or a CDN link), except the value of `--no`,
which is words and is translated on its own. A translator that fails or times out never
blocks a submit: the prompt goes upstream untranslated, as midjourney-proxy does.

The back ends speak plain HTTP through a `requests.Session` passed in (their SDKs would add
three dependencies for one POST each, and a session lets tests point them at a local fake).
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any, Protocol

import requests

from config import Settings
from config.errors import ConfigError, MjqError

log = logging.getLogger(__name__)

#: Scripts that mean "not English yet", as a regex class body: CJK Unified Ideographs with
#: Extension A, the compatibility block and Extensions B-H, Japanese kana, Korean hangul
#: (jamo and syllables). CJK punctuation and full-width forms alone do not count.
CJK_CLASS = (
    "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0003134f"
)
_CJK_RE = re.compile(f"[{CJK_CLASS}]")
#: Image URLs at the very start of a prompt (Midjourney's image prompts), each followed by space.
_LEADING_URLS_RE = re.compile(r"(?:https?://\S+\s+)+", re.IGNORECASE)
#: The parameters start at the first `--<letter>` that begins a word.
_PARAMS_START_RE = re.compile(r"(?<!\S)--[a-z]", re.IGNORECASE)
#: `--no <value>`: the value runs to the next parameter or the end (trailing space excluded).
_NO_PARAM_RE = re.compile(r"(?<!\S)(--no\s+)(?!--[a-z])(.+?)(?=\s+--[a-z]|\s*\Z)", re.IGNORECASE | re.DOTALL)
#: Translation error messages quote at most this much of an answer body, characters.
_BODY_EXCERPT_CHARS = 200

OPENAI_SYSTEM_PROMPT = (
    "You translate prompts for an image generator into English. Translate the user's message "
    "into natural English, keeping its meaning, names, numbers and punctuation; leave any "
    "English words as they are. Output only the translation, with no quotes or explanations."
)


class TranslationError(MjqError):
    """Raised by a translator that could not translate (network, HTTP status, error answer)."""


class Translator(Protocol):
    def translate(self, text: str) -> str:
        """`text` (with CJK words) in English. Raises TranslationError."""
        ...


class NoTranslator:
    """MJQ_TRANSLATOR=none: prompts go upstream as written."""

    def translate(self, text: str) -> str:
        return text


class OpenAITranslator:
    """Any OpenAI-compatible chat API: `POST {base_url}/chat/completions`, temperature 0."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout_seconds: float,
                 session: requests.Session) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key, self.model = api_key, model
        self.timeout_seconds, self.session = timeout_seconds, session

    def translate(self, text: str) -> str:
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": OPENAI_SYSTEM_PROMPT}, {"role": "user", "content": text}],
        }
        answer = _post(self.session, self.url, self.timeout_seconds, "openai",
                       json=body, headers={"Authorization": f"Bearer {self.api_key}"})
        return _required(lambda: str(answer["choices"][0]["message"]["content"]), "openai", answer)


class BaiduTranslator:
    """Baidu Translate (general text API): a signed form POST, source language detected."""

    def __init__(self, appid: str, secret: str, url: str, timeout_seconds: float, session: requests.Session) -> None:
        self.appid, self.secret, self.url = appid, secret, url
        self.timeout_seconds, self.session = timeout_seconds, session

    def translate(self, text: str) -> str:
        salt = str(secrets.randbelow(90_000) + 10_000)
        # Baidu signs the raw UTF-8 text, before form encoding.
        sign = hashlib.md5(f"{self.appid}{text}{salt}{self.secret}".encode()).hexdigest()
        form = {"q": text, "from": "auto", "to": "en", "appid": self.appid, "salt": salt, "sign": sign}
        answer = _post(self.session, self.url, self.timeout_seconds, "baidu", data=form)
        # Baidu answers HTTP 200 with an error_code for every failure; 52000 means success.
        if isinstance(answer, dict) and str(answer.get("error_code", "52000")) != "52000":
            raise TranslationError(f"baidu: error {answer['error_code']}: {answer.get('error_msg', '')}")
        # One trans_result per line of q.
        return _required(lambda: "\n".join(str(r["dst"]) for r in answer["trans_result"]), "baidu", answer)


class DeepLTranslator:
    """DeepL `POST /v2/translate` (Free or Pro endpoint), source language detected."""

    def __init__(self, auth_key: str, url: str, timeout_seconds: float, session: requests.Session) -> None:
        self.auth_key, self.url = auth_key, url
        self.timeout_seconds, self.session = timeout_seconds, session

    def translate(self, text: str) -> str:
        answer = _post(self.session, self.url, self.timeout_seconds, "deepl",
                       json={"text": [text], "target_lang": "EN"},
                       headers={"Authorization": f"DeepL-Auth-Key {self.auth_key}"})
        return _required(lambda: str(answer["translations"][0]["text"]), "deepl", answer)


def _post(session: requests.Session, url: str, timeout_seconds: float, name: str, **kwargs: Any) -> Any:
    """POST and decode a JSON answer. Raises TranslationError (no secret ever in the message)."""
    try:
        response = session.post(url, timeout=timeout_seconds, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        raise TranslationError(f"{name}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise TranslationError(f"{name}: HTTP {response.status_code}: {response.text[:_BODY_EXCERPT_CHARS]}")
    try:
        return response.json()
    except ValueError:
        raise TranslationError(f"{name}: the answer is not JSON: {response.text[:_BODY_EXCERPT_CHARS]}") from None


def _required(extract: Callable[[], str], name: str, answer: Any) -> str:
    """The translation `extract()` reads from an answer; a missing field or empty text is an error."""
    try:
        text = extract()
    except (KeyError, IndexError, TypeError) as exc:
        raise TranslationError(f"{name}: unexpected answer ({exc!r}): {str(answer)[:_BODY_EXCERPT_CHARS]}") from None
    if not text.strip():
        raise TranslationError(f"{name}: the translation is empty")
    return text


def has_cjk(text: str) -> bool:
    """True when `text` holds a Chinese ideograph, Japanese kana or Korean hangul."""
    return _CJK_RE.search(text) is not None


def _translate_words(text: str, translator: Translator) -> str:
    """`text` translated when it has CJK, its surrounding whitespace kept. Raises TranslationError."""
    if not has_cjk(text):
        return text
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    return text[:start] + translator.translate(text[start:end]).strip() + text[end:]


def translate_text(text: str, translator: Translator) -> str:
    """Free text (no parameters) in English when it has CJK; on any TranslationError, `text` unchanged."""
    try:
        return _translate_words(text, translator)
    except TranslationError as exc:
        log.warning("translation failed, text kept as written: %s", exc)
        return text


def translate_prompt(prompt: str, translator: Translator) -> str:
    """The prompt to send upstream (`promptEn`): its CJK words in English, URLs and params verbatim.

    A prompt without CJK text is returned as is, without calling the translator. Leading
    image URLs and everything from the first ` --<letter>` on are kept byte for byte, except
    each `--no` value, translated on its own. When the translator fails (TranslationError)
    the whole prompt is returned unchanged and a warning is logged: an outage never blocks
    a submit.
    """
    if not has_cjk(prompt):
        return prompt
    leading = _LEADING_URLS_RE.match(prompt)
    urls_end = leading.end() if leading else 0
    params_at = _PARAMS_START_RE.search(prompt, urls_end)
    text_end = params_at.start() if params_at else len(prompt)
    urls, text, params = prompt[:urls_end], prompt[urls_end:text_end], prompt[text_end:]
    try:
        text = _translate_words(text, translator)
        params = _NO_PARAM_RE.sub(lambda m: m.group(1) + _translate_words(m.group(2), translator), params)
    except TranslationError as exc:
        log.warning("translation failed, prompt sent as written: %s", exc)
        return prompt
    return urls + text + params


def make_translator(settings: Settings, session: requests.Session | None = None) -> Translator:
    """The translator MJQ_TRANSLATOR names, configured from settings.

    Build it once per process and reuse it: it holds the HTTP session (a connection pool).
    `session` defaults to a new `requests.Session` (which honours HTTP(S)_PROXY).

    Raises:
        ConfigError: settings built without `Settings.from_env` name an unknown translator.
    """
    if settings.translator == "NONE":
        return NoTranslator()
    http = session if session is not None else requests.Session()
    timeout = settings.translate_timeout_seconds
    if settings.translator == "OPENAI":
        return OpenAITranslator(settings.openai_base_url, settings.openai_api_key, settings.openai_model, timeout, http)
    if settings.translator == "BAIDU":
        return BaiduTranslator(settings.baidu_appid, settings.baidu_secret, settings.baidu_url, timeout, http)
    if settings.translator == "DEEPL":
        return DeepLTranslator(settings.deepl_auth_key, settings.deepl_url, timeout, http)
    raise ConfigError(f"MJQ_TRANSLATOR: expected none, openai, baidu or deepl, got {settings.translator!r}")

"""Prompt translation against a local fake of the OpenAI, Baidu and DeepL APIs (no internet)."""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from app.services.translation import (
    OPENAI_SYSTEM_PROMPT,
    BaiduTranslator,
    DeepLTranslator,
    NoTranslator,
    OpenAITranslator,
    TranslationError,
    Translator,
    has_cjk,
    make_translator,
    translate_prompt,
    translate_text,
)
from config import ConfigError, Settings
from tests.fakes.translation_server import BAIDU_PATH, DEEPL_PATH, OPENAI_PATH, FakeTranslationServer, Recorded

TIMEOUT_SECONDS = 5.0


@pytest.fixture
def server() -> Iterator[FakeTranslationServer]:
    with FakeTranslationServer() as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # a proxy in the environment must not see loopback test traffic
    yield session
    session.close()


def settings_for(kind: str, server: FakeTranslationServer, **env: str) -> Settings:
    """Settings pointing translator `kind` at the fake server with its credentials."""
    base = {
        "openai": {"MJQ_OPENAI_BASE_URL": server.url + "/v1", "MJQ_OPENAI_API_KEY": server.openai_key,
                   "MJQ_OPENAI_MODEL": "gpt-fake-mini"},
        "baidu": {"MJQ_BAIDU_URL": server.url + BAIDU_PATH, "MJQ_BAIDU_APPID": server.baidu_appid,
                  "MJQ_BAIDU_SECRET": server.baidu_secret},
        "deepl": {"MJQ_DEEPL_URL": server.url + DEEPL_PATH, "MJQ_DEEPL_AUTH_KEY": server.deepl_key},
    }[kind]
    return Settings.from_env({"MJQ_TRANSLATOR": kind, "MJQ_TRANSLATE_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
                              **base, **env})


KINDS = ["openai", "baidu", "deepl"]


@pytest.fixture(params=KINDS)
def translator(request: pytest.FixtureRequest, server: FakeTranslationServer, http: requests.Session) -> Translator:
    """Each real back end, configured from settings, talking to the fake."""
    return make_translator(settings_for(request.param, server), http)


def sent_texts(server: FakeTranslationServer) -> list[str]:
    """The text of every translation request the fake received, whatever the wire format."""
    texts = []
    for req in server.requests:
        if req.path == OPENAI_PATH:
            texts.append(req.json()["messages"][-1]["content"])
        elif req.path == BAIDU_PATH:
            texts.append(req.form()["q"])
        else:
            texts.extend(req.json()["text"])
    return texts


# --- the prompt splitter, through every back end -------------------------------------------

def test_leading_image_urls_and_trailing_params_are_kept_byte_for_byte(translator, server):
    prompt = ("https://cdn.example/a.png  https://cdn.example/猫/b.jpg?x=1 "
              "一只猫 在月亮上，水彩画 --ar 16:9  --stylize 250 --sref https://cdn.example/s.png --v 6.1")

    assert translate_prompt(prompt, translator) == (
        "https://cdn.example/a.png  https://cdn.example/猫/b.jpg?x=1 "
        "a cat on the moon, watercolor painting --ar 16:9  --stylize 250 --sref https://cdn.example/s.png --v 6.1"
    )
    assert sent_texts(server) == ["一只猫 在月亮上，水彩画"]


def test_the_value_of_no_is_translated_on_its_own(translator, server):
    prompt = "红色的狐狸 --ar 1:1 --no 狗, 文字 --q 2"

    assert translate_prompt(prompt, translator) == "a red fox --ar 1:1 --no dog, text --q 2"
    assert sent_texts(server) == ["红色的狐狸", "狗, 文字"]


def test_an_english_prompt_with_a_cjk_no_value_translates_only_that_value(translator, server):
    assert translate_prompt("a red fox --no 水印", translator) == "a red fox --no watermark"
    assert sent_texts(server) == ["水印"]


def test_a_prompt_without_cjk_text_makes_no_http_call(translator, server):
    prompt = "https://cdn.example/a.png a red fox, ｆｕｌｌｗｉｄｔｈ「quotes」 --no text --ar 16:9"

    assert translate_prompt(prompt, translator) == prompt
    only_the_url_is_cjk = "https://cdn.example/猫.png a red fox --ar 16:9"
    assert translate_prompt(only_the_url_is_cjk, translator) == only_the_url_is_cjk
    assert server.requests == []


def test_a_prompt_of_urls_and_params_only_keeps_them(translator, server):
    prompt = "https://cdn.example/a.png --no 猫"

    assert translate_prompt(prompt, translator) == "https://cdn.example/a.png --no cat"


def test_a_server_error_sends_the_original_prompt(translator, server, caplog):
    server.fail_status = 500
    prompt = "一只猫 --ar 16:9"

    with caplog.at_level(logging.WARNING, logger="app.services.translation"):
        assert translate_prompt(prompt, translator) == prompt
    assert "HTTP 500" in caplog.text
    assert len(server.requests) == 1


class FailsOnSecondCall:
    """A translator whose quota runs out after one call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def translate(self, text: str) -> str:
        self.calls.append(text)
        if len(self.calls) > 1:
            raise TranslationError("deepl: HTTP 456: quota exceeded")
        return "a cat"


def test_a_failing_no_value_keeps_the_whole_prompt_as_written():
    translator = FailsOnSecondCall()

    assert translate_prompt("一只猫 --no 狗", translator) == "一只猫 --no 狗"
    assert translator.calls == ["一只猫", "狗"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_translator_that_does_not_answer_in_time_sends_the_original_prompt(kind, server, http):
    translator = make_translator(settings_for(kind, server, MJQ_TRANSLATE_TIMEOUT_SECONDS="0.3"), http)
    server.delay_seconds = 10
    started = time.monotonic()

    assert translate_prompt("一只猫", translator) == "一只猫"
    assert time.monotonic() - started < 5


def test_an_unreachable_translator_sends_the_original_prompt(http):
    server = FakeTranslationServer().start()
    settings = settings_for("openai", server)
    server.stop()  # the port is closed now: connection refused

    assert translate_prompt("一只猫", make_translator(settings, http)) == "一只猫"


def test_the_no_translator_returns_prompts_as_written():
    translator = make_translator(Settings.from_env({}))

    assert isinstance(translator, NoTranslator)
    assert translate_prompt("一只猫 --ar 16:9", translator) == "一只猫 --ar 16:9"


def test_translate_text_keeps_surrounding_whitespace_and_falls_back_on_failure(server, http):
    translator = make_translator(settings_for("baidu", server), http)
    assert translate_text("  一只猫\n", translator) == "  a cat\n"

    server.fail_status = 503
    assert translate_text("  一只猫\n", translator) == "  一只猫\n"


# --- what each back end sends ---------------------------------------------------------------

BACKENDS: dict[str, type] = {"openai": OpenAITranslator, "baidu": BaiduTranslator, "deepl": DeepLTranslator}


def translate_once(kind: str, server: FakeTranslationServer, http: requests.Session) -> Recorded:
    """Translate "一只猫" with back end `kind` built from settings; the one request it sent."""
    translator = make_translator(settings_for(kind, server), http)
    assert isinstance(translator, BACKENDS[kind])
    assert translator.translate("一只猫") == "a cat"
    [req] = server.requests
    return req


def test_openai_sends_the_bearer_key_the_model_and_temperature_zero(server, http):
    req = translate_once("openai", server, http)
    body = req.json()
    assert (req.path, req.headers["authorization"]) == (OPENAI_PATH, "Bearer sk-test")
    assert (body["model"], body["temperature"]) == ("gpt-fake-mini", 0)
    assert body["messages"] == [{"role": "system", "content": OPENAI_SYSTEM_PROMPT},
                                {"role": "user", "content": "一只猫"}]


def test_openai_with_a_wrong_key_is_a_translation_error(server, http):
    translator = OpenAITranslator(server.url + "/v1", "sk-wrong", "m", TIMEOUT_SECONDS, http)

    with pytest.raises(TranslationError, match="openai: HTTP 401") as caught:
        translator.translate("一只猫")
    assert "sk-wrong" not in str(caught.value)


def test_baidu_signs_each_request_with_md5_of_appid_text_salt_and_secret(server, http):
    req = translate_once("baidu", server, http)
    form = req.form()
    expected = hashlib.md5(("20240101" + "一只猫" + form["salt"] + "baidu-secret").encode()).hexdigest()
    assert form["sign"] == expected
    assert (form["appid"], form["q"], form["from"], form["to"]) == ("20240101", "一只猫", "auto", "en")
    assert form["salt"].isdigit() and len(form["salt"]) == 5
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"


def test_baidu_joins_the_results_of_each_line(server, http):
    translator = make_translator(settings_for("baidu", server), http)

    assert translator.translate("一只猫\n在月亮上") == "a cat\non the moon"


@pytest.mark.parametrize("secret, code", [("wrong-secret", "54001"), ("baidu-secret", "54003")])
def test_a_baidu_error_code_is_a_translation_error(server, http, secret, code):
    server.baidu_error_code = "54003"  # Baidu's "access frequency limited"; checked after the sign
    translator = BaiduTranslator(server.baidu_appid, secret, server.url + BAIDU_PATH, TIMEOUT_SECONDS, http)

    with pytest.raises(TranslationError, match=f"baidu: error {code}"):
        translator.translate("一只猫")


def test_deepl_sends_the_auth_key_header_and_english_as_the_target(server, http):
    req = translate_once("deepl", server, http)
    assert req.headers["authorization"] == "DeepL-Auth-Key deepl-key:fx"
    assert req.json() == {"text": ["一只猫"], "target_lang": "EN"}


def test_deepl_with_a_wrong_key_is_a_translation_error(server, http):
    translator = DeepLTranslator("other-key", server.url + DEEPL_PATH, TIMEOUT_SECONDS, http)

    with pytest.raises(TranslationError, match="deepl: HTTP 403"):
        translator.translate("一只猫")


@pytest.mark.parametrize("make", [
    lambda url, http: OpenAITranslator(url, "k", "m", TIMEOUT_SECONDS, http),
    lambda url, http: BaiduTranslator("a", "s", url, TIMEOUT_SECONDS, http),
    lambda url, http: DeepLTranslator("k", url, TIMEOUT_SECONDS, http),
], ids=KINDS)
def test_a_wrong_endpoint_is_a_translation_error(make: Callable[[str, requests.Session], Translator], server, http):
    with pytest.raises(TranslationError, match="HTTP 404"):
        make(server.url + "/nowhere", http).translate("一只猫")


def test_an_answer_without_the_translation_field_is_a_translation_error(server, http):
    # Baidu's endpoint answers HTTP 200 with an error_code object, which has no "translations".
    translator = DeepLTranslator(server.deepl_key, server.url + BAIDU_PATH, TIMEOUT_SECONDS, http)

    with pytest.raises(TranslationError, match="deepl: unexpected answer"):
        translator.translate("一只猫")


# --- detection and configuration -------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("一只猫", True),            # CJK Unified Ideographs
    ("㐀", True),                # Extension A
    ("𠀀", True),                # Extension B
    ("ねこ と ネコ", True),       # hiragana, katakana
    ("고양이", True),            # hangul syllables
    ("a red fox", False),
    ("，。「」ｆｏｘ", False),     # CJK punctuation and full-width Latin alone need no translation
    ("café 🦊 --ar 16:9", False),
])
def test_cjk_detection_covers_chinese_japanese_and_korean_text(text, expected):
    assert has_cjk(text) is expected


@pytest.mark.parametrize("env, name", [
    ({"MJQ_TRANSLATOR": "openai"}, "MJQ_OPENAI_API_KEY"),
    ({"MJQ_TRANSLATOR": "openai", "MJQ_OPENAI_API_KEY": "k", "MJQ_OPENAI_MODEL": " "}, "MJQ_OPENAI_MODEL"),
    ({"MJQ_TRANSLATOR": "baidu", "MJQ_BAIDU_SECRET": "s"}, "MJQ_BAIDU_APPID"),
    ({"MJQ_TRANSLATOR": "baidu", "MJQ_BAIDU_APPID": "a"}, "MJQ_BAIDU_SECRET"),
    ({"MJQ_TRANSLATOR": "deepl"}, "MJQ_DEEPL_AUTH_KEY"),
    ({"MJQ_TRANSLATOR": "google"}, "MJQ_TRANSLATOR"),
    ({"MJQ_TRANSLATE_TIMEOUT_SECONDS": "0"}, "MJQ_TRANSLATE_TIMEOUT_SECONDS"),
    ({"MJQ_DEEPL_URL": "ftp://x"}, "MJQ_DEEPL_URL"),
])
def test_a_translator_without_its_credentials_stops_at_start_naming_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_translator_names_are_case_insensitive_and_default_to_none():
    assert Settings.from_env({}).translator == "NONE"
    assert Settings.from_env({"MJQ_TRANSLATOR": "DeepL", "MJQ_DEEPL_AUTH_KEY": "k"}).translator == "DEEPL"


def test_make_translator_refuses_an_unknown_name_in_hand_built_settings():
    with pytest.raises(ConfigError, match="MJQ_TRANSLATOR"):
        make_translator(Settings(translator="GOOGLE"))

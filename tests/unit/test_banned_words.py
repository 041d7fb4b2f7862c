"""Banned words: word-boundary matching on promptEn, the shipped list and the override file."""
from __future__ import annotations

import os
import random
import re
from importlib import resources
from pathlib import Path

import pytest

from app.services.banned_words import BannedWords, read_word_list
from config import ConfigError, Settings


@pytest.fixture(scope="module")
def default() -> BannedWords:
    return BannedWords.default()


def test_a_banned_word_is_returned_as_the_prompt_writes_it(default):
    assert default.find("Nude figure in a garden, oil on canvas") == "Nude"


@pytest.mark.parametrize("prompt", [
    "a class of assassins in a classic brass hall",  # "ass" inside words
    "a bass guitar, passage, grassland, embassy",
    "Essex countryside, sextant, Middlesex",           # "sex" inside words
    "a heroine on a gorge with a methodical metronome",  # "heroin", "gore", "meth" inside words
    "a red fox in the snow --ar 16:9 --v 6.1",
])
def test_words_inside_other_words_are_not_banned(default, prompt):
    assert default.find(prompt) is None


def test_the_first_hit_in_prompt_order_is_reported(default):
    # "nude" comes before "gore" in the list; the prompt names gore first.
    assert default.find("gore and a nude statue") == "gore"


def test_at_one_position_the_longest_entry_wins():
    words = BannedWords(["big", "big cat", "big cat eyes"])

    assert words.find("a BIG CAT EYES poster") == "BIG CAT EYES"
    assert words.find("a big cat") == "big cat"
    assert words.find("a big catalogue") == "big"


def test_a_phrase_matches_across_any_whitespace(default):
    assert default.find("a portrait, Scantily \t Clad, studio light") == "Scantily \t Clad"


def test_the_params_count(default):
    assert default.find("a marble statue --no nude --ar 2:3") == "nude"


def test_image_urls_do_not_cause_false_hits(default):
    assert default.find("https://cdn.example.com/u/nude-colour.png a beige vase --ar 1:1") is None
    assert default.find("<https://s.mj.run/gore-42> a vase") is None
    assert default.find("https://cdn.example.com/u/a.png a nude figure") == "nude"


def test_regex_metacharacters_in_entries_match_literally():
    words = BannedWords(["s.x", "c++", "(evil)", "a|b", "[x"])

    assert words.find("a saxophone and sax") is None  # upstream's unescaped "s.x" matched "sax"
    assert words.find("written in c++ today") == "c++"
    assert words.find("cpp or c+") is None
    assert words.find("the (EVIL) twin") == "(EVIL)"
    assert words.find("evil") is None
    assert words.find("a or b, a|b") == "a|b"
    assert words.find("array[x]") is None  # "y" before "[" joins it to a word
    assert words.find("array [x]") == "[x"


def test_cjk_text_around_an_english_word_is_a_boundary(default):
    assert default.find("裸体nude照片") == "nude"


def test_a_cjk_entry_is_found_inside_a_cjk_sentence():
    assert BannedWords(["裸体"]).find("一个裸体的人") == "裸体"


def test_an_empty_list_bans_nothing():
    assert BannedWords([]).find("nude gore") is None
    assert len(BannedWords(["  ", ""])) == 0


def test_the_one_regex_finds_what_a_loop_of_word_regexes_finds(default):
    # The trie regex against the obvious implementation, on prompts mixing banned words,
    # their prefixes and extensions, and innocent words.
    rng = random.Random(7)
    pieces = list(default.words) + [w[:-1] for w in default.words] + [w + "s" for w in default.words] + [
        "a", "red", "fox", "class", "bass", "--no", "--ar 16:9", ",", "::2", "(", ")"]
    loop = [re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, w.split())) + r"(?!\w)", re.I) for w in default.words]
    for _ in range(500):
        prompt = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        hits = [m for p in loop if (m := p.search(prompt))]
        expected = min(hits, key=lambda m: (m.start(), -len(m.group()))).group() if hits else None
        assert default.find(prompt) == expected, prompt


# --- the shipped list and the override file -------------------------------------------------

def test_the_shipped_list_is_package_data_of_a_sensible_size():
    text = resources.files("app.data").joinpath("banned-words.txt").read_text(encoding="utf-8")
    entries = read_word_list(text)

    assert 100 <= len(entries) <= 200
    assert len(set(entries)) == len(entries)
    assert BannedWords.default().words == tuple(entries)


def test_the_file_format_allows_comments_blank_lines_and_any_case(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# house list\n\n  TeaPot  \nRED   Herring\n# nude\n", encoding="utf-8")
    words = BannedWords.from_file(path)

    assert words.words == ("teapot", "red herring")
    assert words.find("a TEAPOT and a red herring") == "TEAPOT"
    assert words.find("a nude") is None


def test_without_an_override_file_the_shipped_list_applies():
    assert BannedWords.from_settings(Settings.from_env({})) is BannedWords.default()


def test_an_override_file_replaces_the_shipped_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("teapot\n", encoding="utf-8")
    words = BannedWords.from_settings(Settings.from_env({"MJQ_BANNED_WORDS_FILE": str(path)}))

    assert words.find("a teapot") == "teapot"
    assert words.find("a nude figure") is None


def test_an_edited_override_file_takes_effect_without_a_restart(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("teapot\n", encoding="utf-8")
    settings = Settings.from_env({"MJQ_BANNED_WORDS_FILE": str(path)})
    first = BannedWords.from_settings(settings)
    assert BannedWords.from_settings(settings) is first  # reused while unchanged

    path.write_text("kettle\n", encoding="utf-8")
    later = os.stat(path).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))

    assert BannedWords.from_settings(settings).find("a teapot and a kettle") == "kettle"


def test_a_missing_override_file_is_a_config_error_naming_the_variable(tmp_path):
    settings = Settings.from_env({"MJQ_BANNED_WORDS_FILE": str(tmp_path / "missing.txt")})

    with pytest.raises(ConfigError, match="MJQ_BANNED_WORDS_FILE"):
        BannedWords.from_settings(settings)


def test_an_override_file_that_is_not_utf8_is_a_config_error_naming_the_variable(tmp_path):
    path = Path(tmp_path / "latin1.txt")
    path.write_bytes("café\n".encode("latin-1"))

    with pytest.raises(ConfigError, match="MJQ_BANNED_WORDS_FILE"):
        BannedWords.from_settings(Settings.from_env({"MJQ_BANNED_WORDS_FILE": str(path)}))

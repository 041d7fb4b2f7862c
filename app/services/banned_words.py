"""Banned words: the check behind code 24, on the English prompt (`promptEn`) at submit.

The list is the shipped `app/data/banned-words.txt`, or the file MJQ_BANNED_WORDS_FILE
names, which replaces it. Matching differs from midjourney-proxy on purpose in three ways:

- entries are regex-escaped (upstream pastes each word into a regex unescaped, so an entry
  such as `s.x` matched `sax`, and one such as `[x` broke the check);
- image URLs are blanked out before matching: a URL is an opaque reference to an image
  that Midjourney moderates as an image, and its path often holds innocent file names
  (`.../nude-colour.png`). Everything else counts, the `--params` included (`--no nude`
  is refused, as upstream refuses it);
- a CJK character counts as a word boundary, because CJK text has no spaces: `nude` is
  found in `裸体nude`, and a CJK entry in an override list is found inside a CJK sentence.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from app.services.translation import CJK_CLASS
from config import Settings
from config.errors import ConfigError

#: Image URLs are blanked (same length, so offsets still map to the prompt) before matching.
_URL_RE = re.compile(r"https?://\S+", re.IGNORECASE)
#: A word character that joins a word: letters, digits, `_`, but not CJK (which has no spaces).
_JOINING = rf"[^\W{CJK_CLASS}]"
#: Override lists kept loaded, keyed by path, modification time and size (so an edit reloads).
_LOADED_FILES_CACHED = 16


def read_word_list(text: str) -> list[str]:
    """Entries of a banned-word file: stripped non-blank lines, `#` lines skipped, lower-cased."""
    words = (line.strip().lower() for line in text.splitlines())
    return [word for word in words if word and not word.startswith("#")]


class BannedWords:
    """An immutable list of banned words, compiled once into one regex."""

    def __init__(self, words: Iterable[str]) -> None:
        # dict.fromkeys de-duplicates and keeps the file's order, so `words` reads like the file.
        self.words: tuple[str, ...] = tuple(dict.fromkeys(" ".join(w.lower().split()) for w in words if w.strip()))
        self._pattern: re.Pattern[str] | None = (
            re.compile(rf"(?<!{_JOINING}){_trie_regex(self.words)}(?!{_JOINING})", re.IGNORECASE)
            if self.words else None
        )

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BannedWords:
        """The list in a UTF-8 file (see `read_word_list`).

        Raises:
            OSError: the file cannot be read.
            UnicodeDecodeError: the file is not UTF-8.
        """
        return cls(read_word_list(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def default(cls) -> BannedWords:
        """The list shipped with mjq (`app/data/banned-words.txt`), loaded once per process."""
        return _shipped()

    @classmethod
    def from_settings(cls, settings: Settings) -> BannedWords:
        """MJQ_BANNED_WORDS_FILE when set, else the shipped list.

        Cheap to call per request: a loaded file is reused until its modification time or
        size changes (so an edited list takes effect without a restart).

        Raises:
            ConfigError: MJQ_BANNED_WORDS_FILE names a file that is missing, unreadable or not UTF-8.
        """
        path = settings.banned_words_file.strip()
        if not path:
            return cls.default()
        try:
            stat = os.stat(path)
            return _from_file_cached(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"MJQ_BANNED_WORDS_FILE: cannot read the banned-word list {path!r}: {exc}") from None

    def find(self, prompt_en: str) -> str | None:
        """The first banned word in `prompt_en`, as it is written there (original case), or None.

        "First" is in prompt order; at one position the longest entry wins.
        """
        if self._pattern is None:
            return None
        masked = _URL_RE.sub(lambda m: " " * len(m.group()), prompt_en)
        hit = self._pattern.search(masked)
        return prompt_en[hit.start():hit.end()] if hit else None


def _trie_regex(words: Iterable[str]) -> str:
    """One regex matching any of `words`, as a trie: `(?:a(?:ss|reola)|b(?:ig\\s+ass|...))`.

    A trie lets the regex engine reject most positions on one character instead of trying
    every entry (about 7x faster than a flat alternation on a 2,000-character prompt). An
    entry's end inside another entry is an optional group, and `?` is greedy, so at one
    position the longest entry wins ("big ass" over "big"), shorter ones on backtracking.
    A space in an entry matches any run of whitespace.
    """
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # "" marks the end of an entry

    def branch(node: dict[str, dict]) -> str:
        parts = [(r"\s+" if char == " " else re.escape(char)) + branch(child)
                 for char, child in sorted(node.items()) if char]
        if not parts:
            return ""
        body = parts[0] if len(parts) == 1 else f"(?:{'|'.join(parts)})"
        return f"(?:{body})?" if "" in node else body

    return f"(?:{branch(root)})"


@functools.cache
def _shipped() -> BannedWords:
    text = resources.files("app.data").joinpath("banned-words.txt").read_text(encoding="utf-8")
    return BannedWords(read_word_list(text))


@functools.lru_cache(maxsize=_LOADED_FILES_CACHED)
def _from_file_cached(path: str, mtime_ns: int, size: int) -> BannedWords:
    # mtime_ns and size are part of the cache key only: a changed file is a new entry.
    return BannedWords.from_file(path)

"""Prompt preparation at submit: translate CJK text to English, then check banned words.

Applied to imagine, shorten and modal prompts (as midjourney-proxy Plus does).
"""
from __future__ import annotations

from collections.abc import Callable

from app.errors import BannedPrompt
from config import Settings


class PromptChecker:
    """`translate(prompt) -> prompt_en` and `find(prompt_en) -> banned word or None`, passed in."""

    def __init__(self, translate: Callable[[str], str], find: Callable[[str], str | None]) -> None:
        self.translate = translate
        self.find = find

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptChecker:
        from app.services.banned_words import BannedWords
        from app.services.translation import make_translator, translate_prompt

        translator = make_translator(settings)
        banned = BannedWords.from_settings(settings)
        return cls(lambda prompt: translate_prompt(prompt, translator), banned.find)

    def prepare(self, prompt: str) -> str:
        """The English prompt to send upstream. Raises BannedPrompt (code 24) naming the word."""
        prompt_en = self.translate(prompt)
        word = self.find(prompt_en)
        if word is not None:
            raise BannedPrompt(f"the prompt may contain a banned word: {word}",
                               {"promptEn": prompt_en, "bannedWord": word})
        return prompt_en

"""The Discord message parser against a corpus of Midjourney messages in every format mjq reads.

Each sample in tests/unit/discord_corpus/*.json is a MESSAGE_CREATE/UPDATE payload with what it
must parse to: state, progress, prompt, job hash, buttons, failReason and the account action; a
sample must assert each of them that its message format carries (`carried_fields`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from workers.drivers import discord_parse as dp

CORPUS = Path(__file__).parent / "discord_corpus"
SAMPLES = [sample for path in sorted(CORPUS.glob("*.json")) for sample in json.loads(path.read_text())]
#: Expectation keys read from the parsed content line rather than the reading itself.
CONTENT_KEYS = ("prompt", "kind", "detail", "mode", "stealth", "remix")


def test_the_corpus_covers_every_state_and_format():
    states = {s["expect"]["state"] for s in SAMPLES}
    assert {"start", "progress", "final", "described", "shortened", "queued", "failed", "notice", "other"} <= states
    kinds = {s["expect"].get("kind") for s in SAMPLES} | {s["expect"].get("detail") for s in SAMPLES}
    assert {"imagine", "variation", "image", "upscale", "zoom", "pan", "Strong", "Subtle", "Region", "Creative",
            "2x", "4x", "left", "right", "up", "down"} <= kinds
    assert len(SAMPLES) >= 50


def carried_fields(sample: dict[str, Any]) -> set[str]:
    """What the sample's message format carries, judged from the raw message (not from the parser): a job line
    (`**prompt** - …`) carries the prompt and a status (progress, or none on a final); an image or components carry
    the job hash (or its absence) and the buttons; failures carry the reason and what happens to the account;
    describe and shorten results carry their prompts."""
    message, state = sample["message"], sample["expect"]["state"]
    fields = {"state"}
    if str(message.get("content") or "").startswith("**"):
        fields |= {"prompt", "percent"}
    if message.get("attachments") or message.get("components") or \
            any(embed.get("image") for embed in message.get("embeds") or []):
        fields |= {"job_hash", "buttons"}
    if state == dp.FAILED:
        fields |= {"fail_reason", "account_action"}
    if state in (dp.DESCRIBED, dp.SHORTENED):
        fields |= {"prompts"}
    return fields


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_each_sample_asserts_every_field_its_format_carries(sample: dict[str, Any]):
    expect = sample["expect"]
    assert carried_fields(sample) <= set(expect), f"the sample does not assert {carried_fields(sample) - set(expect)}"
    if expect["state"] in (dp.FINAL, dp.DESCRIBED, dp.SHORTENED):
        assert expect["buttons"], "a result message always carries Midjourney's buttons"


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_each_sample_parses_to_its_expected_reading(sample: dict[str, Any]):
    reading = dp.read_message(sample["message"])
    expect = sample["expect"]
    assert reading.state == expect["state"]
    for key, value in expect.items():
        if key == "state":
            continue
        if key in CONTENT_KEYS:
            assert reading.content is not None, "the content line did not parse"
            assert getattr(reading.content, key) == value, key
        elif key == "buttons":
            assert [b["customId"] for b in reading.buttons] == value
        else:
            assert getattr(reading, key) == value, key


def test_buttons_keep_label_emoji_type_and_style_as_mjq_shows_them():
    message = next(s["message"] for s in SAMPLES if s["name"] == "U2: Image #2")
    buttons = dp.read_message(message).buttons
    assert buttons[2] == {"customId": buttons[2]["customId"], "emoji": "🪄", "label": "Vary (Subtle)", "type": 2,
                          "style": 2}
    assert all(set(b) == {"customId", "emoji", "label", "type", "style"} for b in buttons)
    assert "Web" not in [b["label"] for b in buttons]


def test_the_job_hash_ignores_the_signed_query_string_and_refuses_names_without_one():
    uuid = "3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    assert dp.job_hash(f"https://cdn.test/a/{uuid}_grid_0.webp?ex=1&is=2&hm=3&") == uuid
    assert dp.job_hash(f"https://cdn.test/a/user_a_cat_{uuid}.png?ex=1&is=2&hm=3&") == uuid
    assert dp.job_hash("https://cdn.test/a/1795306566370466123.png?ex=1") is None
    assert dp.job_hash(None) is None


def test_the_seed_comes_from_the_envelope_dm():
    content = "**Job ID**: 3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\n**seed** 1234567890"
    assert dp.parse_seed(content) == ("3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "1234567890")
    assert dp.parse_seed("no seed here") is None


def test_primary_prompts_compare_what_midjourney_rewrites():
    sent = "https://example.com/a.png  a red   fox —ar 16:9 --q 1"
    echoed = "<https://s.mj.run/xyz> a red fox --ar 16:9"
    assert dp.primary_prompt(sent) == dp.primary_prompt(echoed) == "<link>aredfox"

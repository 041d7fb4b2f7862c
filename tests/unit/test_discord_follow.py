"""Correlation: which Discord events belong to a job (nonce → interaction → progress message → job hash)."""
from __future__ import annotations

import itertools
from typing import Any

from workers.drivers.discord_events import ACCOUNT_DISABLED, Event
from workers.drivers.discord_follow import EXPECT_DESCRIBE, Tracker

U = "<@1180000000000000001>"
HASH = "3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OTHER = "0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f"
_ids = itertools.count(1)


def event(kind: str, **data: Any) -> Event:
    return Event(f"{next(_ids)}-0", kind, data)


def message(kind: str, message_id: str, content: str, attachment: str | None = None, **extra: Any) -> Event:
    attachments = [{"url": f"https://cdn.test/a/{attachment}?ex=1&is=2&hm=3&"}] if attachment else []
    return event(kind, id=message_id, channel_id="9", content=content, attachments=attachments, **extra)


def kinds(tracker: Tracker, events: list[Event]) -> list[str]:
    return [step.kind for e in events for step in tracker.feed(e)]


def test_nonce_then_progress_message_then_job_hash_lead_to_the_final_message():
    tracker = Tracker("111", prompt="a red fox")
    steps = kinds(tracker, [
        event("INTERACTION_CREATE", id="500", nonce="111"),
        message("MESSAGE_CREATE", "10", f"**a red fox** - {U} (Waiting to start)", nonce="111"),
        message("MESSAGE_UPDATE", "10", f"**a red fox** - {U} (31%) (fast)", f"{HASH}_grid_0.webp"),
        message("MESSAGE_UPDATE", "10", f"**a red fox** - {U} (62%) (fast)", f"{HASH}_grid_0.webp"),
        event("MESSAGE_DELETE", id="10", channel_id="9"),
        message("MESSAGE_CREATE", "11", f"**a red fox** - {U} (fast)", f"user_a_red_fox_{HASH}.png"),
    ])
    assert steps == ["started", "progress", "progress", "succeeded"]
    assert tracker.progress_message_id == "10" and tracker.job_hash == HASH


def test_another_jobs_messages_with_the_same_prompt_are_not_taken():
    tracker = Tracker("111", prompt="a red fox")
    steps = kinds(tracker, [
        message("MESSAGE_CREATE", "10", f"**a red fox** - {U} (Waiting to start)", nonce="111"),
        message("MESSAGE_UPDATE", "10", f"**a red fox** - {U} (31%) (fast)", f"{HASH}_grid_0.webp"),
        # A twin job (same prompt, its own nonce and hash) finishes first: it is not ours.
        message("MESSAGE_CREATE", "20", f"**a red fox** - {U} (Waiting to start)", nonce="222"),
        message("MESSAGE_CREATE", "21", f"**a red fox** - {U} (fast)", f"user_a_red_fox_{OTHER}.png"),
    ])
    assert steps == ["started", "progress"] and not tracker.done


def test_a_single_nonce_bearing_final_message_is_a_success():
    tracker = Tracker("111")
    assert kinds(tracker, [message("MESSAGE_CREATE", "10", f"**a red fox** - Image #2 {U}",
                                   f"user_a_red_fox_{HASH}.png", nonce="111")]) == ["succeeded"]


def test_after_job_queued_the_interaction_id_links_messages_without_the_nonce():
    tracker = Tracker("111")
    steps = kinds(tracker, [
        event("INTERACTION_SUCCESS", id="500", nonce="111"),
        event("MESSAGE_CREATE", id="9", channel_id="9", content="", nonce="111", embeds=[
            {"title": "Job queued", "description": "Your job will start soon.", "color": 16776960}]),
        message("MESSAGE_CREATE", "10", f"**a fox** - {U} (Waiting to start)", interaction_metadata={"id": "500"}),
    ])
    assert steps == ["started"]


def test_an_error_replying_to_the_progress_message_fails_the_job():
    tracker = Tracker("111")
    kinds(tracker, [message("MESSAGE_CREATE", "10", f"**a fox** - {U} (Waiting to start)", nonce="111")])
    error = event("MESSAGE_CREATE", id="12", channel_id="9", content="", message_reference={"message_id": "10"},
                  embeds=[{"title": "Request cancelled due to output filters", "description": "Sorry!",
                           "color": 16711680}])
    [step] = tracker.feed(error)
    assert step.kind == "failed" and step.reason == "[Request cancelled due to output filters] Sorry!"


def test_vary_region_without_a_nonce_is_found_by_its_reply_to_the_parent_and_its_kind():
    tracker = Tracker("111", parent_message_id="77", reply_kind=("variation", "Region"))
    steps = kinds(tracker, [
        message("MESSAGE_CREATE", "30", f"**a fox** - Variations (Strong) by {U} (Waiting to start)",
                message_reference={"message_id": "77"}),
        message("MESSAGE_CREATE", "31", f"**a fox** - Variations (Region) by {U} (Waiting to start)",
                message_reference={"message_id": "77"}),
        message("MESSAGE_UPDATE", "31", f"**a fox** - Variations (Region) by {U} (50%) (fast)", f"{HASH}_grid_0.webp"),
        message("MESSAGE_CREATE", "32", f"**a fox** - Variations (Region) by {U} (fast)", f"a_fox_{HASH}.png",
                message_reference={"message_id": "77"}),
    ])
    assert steps == ["started", "progress", "succeeded"] and tracker.progress_message_id == "31"


def test_the_prompt_is_a_last_resort_only_once_the_progress_message_without_any_hash_is_gone():
    tracker = Tracker("111", prompt="a  red fox --q 1")
    kinds(tracker, [message("MESSAGE_CREATE", "10", f"**a red fox** - {U} (Waiting to start)", nonce="111"),
                    event("MESSAGE_DELETE", id="10", channel_id="9")])
    [step] = tracker.feed(message("MESSAGE_CREATE", "11", f"**a red fox** - {U} (fast)", "upload.png"))
    assert step.kind == "succeeded"
    fresh = Tracker("111", prompt="a red fox")
    assert fresh.feed(message("MESSAGE_CREATE", "11", f"**a red fox** - {U} (fast)", "upload.png")) == []


def test_a_twin_jobs_result_arriving_before_our_first_progress_edit_is_not_taken():
    tracker = Tracker("111", prompt="a red fox")
    steps = kinds(tracker, [
        message("MESSAGE_CREATE", "10", f"**a red fox** - Variations by {U} (Waiting to start)", nonce="111"),
        # V2 of the same grid (same prompt, its own hash) ends while our V1 has not shown a hash yet.
        message("MESSAGE_CREATE", "21", f"**a red fox** - Variations by {U} (fast)", f"user_a_red_fox_{OTHER}.png"),
        message("MESSAGE_UPDATE", "10", f"**a red fox** - Variations by {U} (31%) (fast)", f"{HASH}_grid_0.webp"),
        event("MESSAGE_DELETE", id="10", channel_id="9"),
        message("MESSAGE_CREATE", "11", f"**a red fox** - Variations by {U} (fast)", f"user_a_red_fox_{HASH}.png"),
    ])
    assert steps == ["started", "progress", "succeeded"] and tracker.job_hash == HASH


def test_a_describe_ends_on_the_embed_edit_of_its_nonce_message():
    tracker = Tracker("111", expect=EXPECT_DESCRIBE)
    image = {"url": "https://cdn.test/a/x.png"}
    steps = kinds(tracker, [
        event("MESSAGE_CREATE", id="10", channel_id="9", content="", nonce="111", embeds=[{"image": image}]),
        event("MESSAGE_UPDATE", id="10", channel_id="9", content="", embeds=[
            {"image": image, "description": "1️⃣ a\n\n2️⃣ b\n\n3️⃣ c\n\n4️⃣ d"}]),
    ])
    assert steps == ["started", "succeeded"]


def test_a_disabled_account_ends_every_follower_with_the_reason():
    tracker = Tracker("111")
    [step] = tracker.feed(event(ACCOUNT_DISABLED, reason="Discord gateway closed with 4004: Authentication failed"))
    assert step.kind == "failed" and "4004" in step.reason and tracker.done


def test_an_embed_of_another_colour_with_a_title_and_text_fails_the_job_whose_message_it_answers():
    """midjourney-proxy's rule for embeds that are neither red errors nor amber warnings (protocol §4.9)."""
    def answer(message_id: str, reply_to: str, **embed: Any) -> Event:
        return event("MESSAGE_CREATE", id=message_id, channel_id="9", content="",
                     message_reference={"message_id": reply_to}, embeds=[{"type": "rich", **embed}])

    tracker = Tracker("111")
    kinds(tracker, [message("MESSAGE_CREATE", "10", f"**a fox** - {U} (Waiting to start)", nonce="111")])
    assert tracker.feed(answer("12", "10", title="Heads up", description="Slow today.", color=16239475)) == []
    assert tracker.feed(answer("13", "10", title="a.example", description="A page.", color=5793266,
                               **{"type": "link"})) == []
    assert tracker.feed(answer("14", "99", title="Sorry! Something went wrong", description="Try again.",
                               color=5793266)) == []  # another job's message
    [step] = tracker.feed(answer("15", "10", title="Sorry! Something went wrong", description="Try again.",
                                 color=5793266))
    assert (step.kind, step.reason) == ("failed", "[Sorry! Something went wrong] Try again.")


def test_a_job_with_links_in_its_prompt_ends_on_the_final_message_showing_its_start_messages_prompt():
    """Pad images and blends: Midjourney shows the images as its own short links, which the job's prompt (sent
    without the pads, or empty for a blend) cannot name; the start message's prompt does."""
    for sent, shown in (("a red fox", "<https://s.mj.run/AbCd> a red fox --fast"),
                        ("", "<https://s.mj.run/AbCd> <https://s.mj.run/EfGh> --ar 1:1 --fast")):
        tracker = Tracker("111", prompt=sent)
        steps = kinds(tracker, [
            message("MESSAGE_CREATE", "10", f"**{shown}** - {U} (Waiting to start)", nonce="111"),
            event("MESSAGE_DELETE", id="10", channel_id="9"),
            # another job with other images, the same words: not ours
            message("MESSAGE_CREATE", "20", f"**{shown.replace('AbCd', 'XyZw')}** - {U} (fast)", f"x_{OTHER}.png"),
            message("MESSAGE_CREATE", "11", f"**{shown}** - {U} (fast)", f"user_a_red_fox_{HASH}.png"),
        ])
        assert steps == ["started", "succeeded"] and tracker.job_hash is None, shown

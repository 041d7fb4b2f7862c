"""The discord driver against the fake Discord, in one process: a gateway supervisor thread writes the
account's event stream (fakeredis), the executor runs jobs through the driver, the fake bot answers."""
from __future__ import annotations

import threading
import time

import pytest
import requests
from PIL import Image

from app import protocol
from app.models import Account, Task
from app.services.account_admin import account_secrets
from tests.imaging import data_url
from tests.unit import discord_harness
from workers.drivers import discord_rest
from workers.drivers.base import Job, UpstreamError
from workers.drivers.discord import with_mode
from workers.drivers.discord_accounts import CREDITS_DISABLE
from workers.drivers.discord_events import EventStream
from workers.drivers.discord_payloads import MIDJOURNEY_APP, NIJI_APP
from workers.drivers.discord_rest import DiscordUrls
from workers.drivers.discord_seed import fetch_seed, seed_lookup

harness = discord_harness.harness


def test_an_imagine_runs_on_discord_with_progress_a_stored_grid_and_midjourneys_buttons(harness, images):
    task_id = harness.submit("/submit/imagine", {"prompt": "a red fox in snow --ar 16:9"})
    task = harness.run(task_id)
    assert task["status"] == protocol.SUCCESS, task["failReason"]
    assert task["imageUrl"].startswith("http://mjq.test/mj/image/")
    props = task["properties"]
    assert props["finalPrompt"] == "a red fox in snow --ar 16:9"
    assert props["messageHash"] and props["messageId"] and props["progressMessageId"] != props["messageId"]
    assert [b["label"] or b["emoji"] for b in task["buttons"]] == ["U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4"]
    assert all(props["messageHash"] in b["customId"] for b in task["buttons"])
    sent = [p for p in harness.fake.interactions if p["nonce"] == props["nonce"]]
    assert len(sent) == 1 and sent[0]["data"]["options"][0]["value"] == "a red fox in snow --ar 16:9 --fast"


def test_a_discord_result_records_its_cdn_url_which_the_origin_mount_answers(harness):
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a red fox"}))
    origin = task["properties"]["originImageUrl"]
    assert origin.startswith(f"{harness.fake.url}/attachments/{harness.user.channel_id}/")
    assert origin.split("?", 1)[0].endswith(f"_{task['properties']['messageHash']}.png") and "?ex=" in origin
    assert requests.get(origin, timeout=5).content == harness.client.get(task["imageUrl"].removeprefix(
        "http://mjq.test")).data
    assert harness.client.get(f"/mj-origin/mj/task/{task['id']}/fetch").get_json()["imageUrl"] == origin
    assert harness.client.get(f"/mj/task/{task['id']}/fetch").get_json()["imageUrl"] == task["imageUrl"]


def test_the_mode_flag_follows_the_job_mode():
    assert with_mode("a cat --relax --ar 2:3", "FAST") == "a cat --ar 2:3 --fast"
    assert with_mode("a cat", "RELAX") == "a cat --relax"
    assert with_mode("a cat --fast", "TURBO") == "a cat --turbo"


def test_a_banned_prompt_embed_fails_the_job_with_title_and_description(harness):
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a cat [fake:banned]"}))
    assert task["status"] == protocol.FAILURE
    assert task["failReason"].startswith("[Banned prompt detected] Sorry!")


def test_follow_ups_click_the_parents_message_and_upscale_is_one_final_message(harness, images):
    grid = harness.run(harness.submit("/submit/imagine", {"prompt": "a red fox"}))
    up = harness.run(harness.click(grid, "U2"))
    assert up["status"] == protocol.SUCCESS, up["failReason"]
    click = next(p for p in harness.fake.interactions if p["nonce"] == up["properties"]["nonce"])
    assert click["type"] == 3 and click["message_id"] == grid["properties"]["messageId"]
    assert click["data"]["custom_id"].endswith(grid["properties"]["messageHash"])
    assert "Vary (Region)" in [b["label"] for b in up["buttons"]]


def test_a_job_queued_embed_keeps_waiting_and_later_messages_match_by_interaction_id(harness):
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a queued fox [fake:queued]"}))
    assert task["status"] == protocol.SUCCESS, task["failReason"]


def test_a_mid_job_filter_fails_the_job_through_the_progress_message_reply(harness):
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a fox [fake:filter]"}))
    assert task["status"] == protocol.FAILURE
    assert task["failReason"].startswith("[Request cancelled due to output filters]")


def test_a_pending_mod_message_fails_the_job_and_disables_the_account(harness):
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a fox [fake:blocked]"}))
    assert task["failReason"].startswith("[Pending mod message]")
    with harness.session_factory() as session:
        account = session.get(Account, "dc-1")
        assert account is not None and not account.enable
        assert account.disabled_reason.startswith("[Pending mod message]")


def test_credits_exhausted_limits_the_account_to_relax(harness):
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a fox [fake:credits]"}))
    assert task["failReason"].startswith("[Credits exhausted]")
    with harness.session_factory() as session:
        account = session.get(Account, "dc-1")
        assert account is not None and account.enable and account.modes == ["RELAX"]


def test_credits_exhausted_disables_the_account_when_the_setting_says_disable(harness):
    harness.retirer.credits_policy = CREDITS_DISABLE  # MJQ_DISCORD_CREDITS_EXHAUSTED=disable
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a fox [fake:credits]"}))
    assert task["status"] == protocol.FAILURE and task["failReason"].startswith("[Credits exhausted]")
    with harness.session_factory() as session:
        account = session.get(Account, "dc-1")
        assert account is not None and not account.enable and account.modes == ["FAST", "TURBO", "RELAX"]
        assert account.disabled_reason == task["failReason"]


def test_the_seed_is_read_from_the_dm_after_show_and_the_envelope_reaction(harness, redis):
    grid = harness.run(harness.submit("/submit/imagine", {"prompt": "a seeded fox"}))
    job_hash = grid["properties"]["messageHash"]
    lookup = seed_lookup(redis, DiscordUrls(api=harness.fake.url),
                         lambda account: account_secrets(account, harness.box))
    with harness.session_factory() as session:
        task = session.get(Task, int(grid["id"]))
        assert lookup(task, session.get(Account, "dc-1")) == harness.fake.bot.seeds[job_hash]
    show = harness.fake.interactions[-1]
    assert show["type"] == 2 and show["data"]["name"] == "show" and "guild_id" not in show
    assert show["channel_id"] == harness.user.dm_channel_id
    assert show["data"]["options"] == [{"type": 3, "name": "job_id", "value": job_hash}]


def test_a_redelivered_job_follows_its_recorded_reference_without_a_second_interaction(harness):
    task_id = harness.submit("/submit/imagine", {"prompt": "a fox once"})
    first = threading.Thread(target=harness.executor.execute, args=(task_id,))
    first.start()
    first.join()
    with harness.session_factory() as session:
        task = session.get(Task, task_id)
        assert task is not None
        nonce, ref = task.properties["nonce"], task.upstream_id
    # Follow again from the reference alone (what a redelivered execution does): same outcome, no new interaction.
    driver = harness.executor.drivers["discord"]
    job = Job(task_id, "IMAGINE", "a fox once", "FAST", "MID_JOURNEY", nonce, "dc-1",
              {"userToken": harness.user.token, "guildId": harness.user.guild_id,
               "channelId": harness.user.channel_id}, {"kind": "imagine"})
    seen: list[str] = []

    class Recorder:
        def started(self, properties=None): seen.append("started")  # noqa: E704
        def progress(self, percent, image_url, properties=None): seen.append(f"{percent}%")  # noqa: E704
        def succeeded(self, image_url, buttons, properties, prompt_en=None): seen.append("succeeded")  # noqa: E704

    with harness.session_factory() as session:
        row = session.get(Task, task_id)
        assert row is not None
        row.status = protocol.IN_PROGRESS  # reopen it so the follower does not stop early
        session.commit()
    started = time.monotonic()
    driver.follow(job, ref, Recorder())
    assert seen[0] == "started" and seen[-1] == "succeeded" and time.monotonic() - started < 5
    assert harness.fake.interaction_count(nonce) == 1


def remix_on(harness) -> None:
    """Remix mode on for account dc-1, in mjq's record and on the fake Discord."""
    with harness.session_factory() as session:
        account = session.get(Account, "dc-1")
        assert account is not None
        account.remix = True
        session.commit()
    harness.user.remix = True


def test_on_a_remix_account_a_variation_answers_midjourneys_modal_with_a_new_nonce(harness):
    grid = harness.run(harness.submit("/submit/imagine", {"prompt": "a red fox"}))
    remix_on(harness)
    modal = harness.click(grid, "V1", code=21)
    answer = harness.client.post("/mj/submit/modal", json={"taskId": str(modal), "prompt": "a blue fox"}).get_json()
    assert answer["code"] == 1, answer
    task = harness.run(modal)
    assert task["status"] == protocol.SUCCESS, task["failReason"]
    submit = next(p for p in harness.fake.interactions if p["type"] == 5)
    assert submit["nonce"] != task["properties"]["nonce"]
    assert submit["data"]["custom_id"].startswith("MJ::RemixModal::")
    assert submit["data"]["components"][0]["components"][0] == {
        "type": 4, "custom_id": "MJ::RemixModal::new_prompt", "value": "a blue fox"}
    assert task["properties"]["finalPrompt"] == "a blue fox"


def test_on_a_remix_account_the_legacy_change_forms_answer_the_remix_modal_with_the_parents_prompt(harness):
    """/submit/change and /submit/simple-change have no modal step: their clients would wait on a MODAL task
    forever, so the worker answers Midjourney's Remix modal with the prompt it shows pre-filled."""
    grid = harness.run(harness.submit("/submit/imagine", {"prompt": "a red fox --ar 3:2"}))
    remix_on(harness)
    for body in ({"taskId": grid["id"], "action": "VARIATION", "index": 1}, {"content": f"{grid['id']} R"}):
        path = "/mj/submit/change" if "taskId" in body else "/mj/submit/simple-change"
        answer = harness.client.post(path, json=body).get_json()
        assert answer["code"] == 1, answer
        task = harness.run(int(answer["result"]))
        assert task["status"] == protocol.SUCCESS, task["failReason"]
        click, submit = harness.fake.interactions[-2:]  # the button, then the answer to the modal it opened
        assert (click["type"], submit["type"]) == (3, 5) and "Modal::" in submit["data"]["custom_id"]
        assert submit["data"]["components"][0]["components"][0]["value"] == grid["properties"]["finalPrompt"]
        assert task["prompt"] == "a red fox --ar 3:2"


PAD = data_url(Image.new("RGB", (32, 32), "red"))


def test_pad_images_lead_the_prompt_fields_and_discord_is_sent_its_own_links_of_them(harness):
    pad = PAD
    grid = harness.run(harness.submit("/submit/imagine", {"prompt": "a red fox", "base64Array": [pad]}))
    assert grid["status"] == protocol.SUCCESS, grid["failReason"]
    own = grid["prompt"].split(" ", 1)[0]  # mjq's URL of the pad image leads prompt, promptEn and the description
    assert own.startswith("http://mjq.test/mj/image/") and grid["promptEn"] == grid["prompt"] == f"{own} a red fox"
    assert grid["description"] == f"/imagine {own} a red fox"
    sent = next(p for p in harness.fake.interactions if p["nonce"] == grid["properties"]["nonce"])
    text = sent["data"]["options"][0]["value"]  # Discord gets its own CDN URL of the pad, and mjq's not at all
    assert text.startswith(f"{harness.fake.url}/attachments/") and text.endswith(" a red fox --fast")
    assert "mjq.test" not in text

    up = harness.run(harness.click(grid, "U1"))
    assert (up["prompt"], up["promptEn"]) == (grid["prompt"], grid["promptEn"])


def test_a_describe_result_is_its_prompt_and_a_blend_prompt_comes_from_the_start_message(harness):
    pad = PAD
    described = harness.run(harness.submit("/submit/describe", {"base64": pad}))
    assert described["status"] == protocol.SUCCESS, described["failReason"]
    assert described["prompt"] == described["promptEn"] == described["properties"]["finalPrompt"]
    assert described["prompt"].startswith("1️⃣")

    blend = harness.run(harness.submit("/submit/blend", {"base64Array": [pad, data_url(Image.new("RGB", (8, 8)))]}))
    assert blend["status"] == protocol.SUCCESS, blend["failReason"]
    assert blend["prompt"] == blend["promptEn"] == blend["properties"]["finalPrompt"]
    assert blend["prompt"].count("<https://s.mj.run/") == 2


def test_the_result_download_is_tried_again_after_a_hiccup_and_fails_the_job_only_when_it_lasts(harness,
                                                                                               monkeypatch):
    monkeypatch.setattr(discord_rest, "DOWNLOAD_RETRY_SECONDS", (0.0, 0.0, 0.0))
    http = harness.executor.drivers["discord"].http
    real, tries, failures = http.request, [], []

    def cdn(method, url, **kw):
        if method == "GET" and "/attachments/" in url and url.split("?", 1)[0].endswith(".png") and failures:
            tries.append(url)
            how = failures.pop(0)
            if how == "reset":
                raise requests.ConnectionError("connection reset by peer")
            refused = requests.Response()
            refused.status_code = how
            return refused
        return real(method, url, **kw)

    http.request = cdn
    failures[:] = ["reset", 503]
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a red fox"}))
    assert task["status"] == protocol.SUCCESS, task["failReason"]
    assert len(tries) == 2 and harness.client.get(task["imageUrl"].removeprefix("http://mjq.test")).status_code == 200

    failures[:], tries[:] = [503] * 4, []
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a grey fox"}))
    assert (task["status"], task["failReason"]) == (protocol.FAILURE, "downloading the result failed: HTTP 503")
    assert len(tries) == 4

    failures[:], tries[:] = [404], []  # gone for good: no point asking again
    task = harness.run(harness.submit("/submit/imagine", {"prompt": "a white fox"}))
    assert (task["status"], task["failReason"]) == (protocol.FAILURE, "downloading the result failed: HTTP 404")
    assert len(tries) == 1


@pytest.mark.parametrize("bot_type, bot", [("MID_JOURNEY", MIDJOURNEY_APP), ("NIJI_JOURNEY", NIJI_APP)])
def test_the_seed_is_asked_of_the_bot_that_made_the_job_in_the_dm_with_that_bot(redis, bot_type, bot):
    asked: list[tuple[str, ...]] = []

    class Rest:
        def open_dm(self, recipient):
            asked.append(("dm", recipient))
            return f"dm-{recipient}"

        def slash_command(self, app, name, options, nonce, attachments=None, channel_id=None, in_guild=True):
            asked.append(("command", app, name, channel_id))

    with pytest.raises(UpstreamError, match="did not send the seed"):
        fetch_seed(Rest(), EventStream(redis, "dc-1"), "3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", bot_type,
                   wait_seconds=0.05)
    assert asked == [("dm", bot), ("command", bot, "show", f"dm-{bot}")]

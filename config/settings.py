"""Every setting of mjq, read once from the environment and parsed strictly.

Each option is declared once below with its variable, parser, default and help text
(the README's configuration table is generated from the same list). A bad value stops
the process with a message that names the variable and the value.
"""
from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.errors import ConfigError

MODES = ("FAST", "RELAX", "TURBO")


def _str(raw: str) -> str:
    return raw


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"expected {lo}..{hi}, got {value}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not lo <= value <= hi or value != value:
            raise ValueError(f"expected {lo}..{hi}, got {raw!r}")
        return value

    return parse


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _choice_exact(*allowed: str) -> Callable[[str], str]:
    by_lower = {a.lower(): a for a in allowed}

    def parse(raw: str) -> str:
        value = by_lower.get(raw.strip().lower())
        if value is None:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError(f"expected a {'/'.join(schemes)} URL, got {raw!r}")
        return value.rstrip("/") if parts.scheme in ("http", "https") else value

    return parse


#: Prefix of a Standard Webhooks secret; the rest is base64 of WEBHOOK_SECRET_BYTES random bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"
#: Allowed size of a webhook secret's key, in bytes (the Standard Webhooks range).
WEBHOOK_SECRET_BYTES = (24, 64)


def decode_webhook_secret(value: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret. Raises ValueError when it is not of that form."""
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"expected {WEBHOOK_SECRET_PREFIX}<base64 of 24-64 random bytes>")
    try:
        key = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {WEBHOOK_SECRET_PREFIX} is not base64") from None
    lo, hi = WEBHOOK_SECRET_BYTES
    if not lo <= len(key) <= hi:
        raise ValueError(f"the key is {len(key)} bytes; {lo}-{hi} are required")
    return key


def _webhook_secret(raw: str) -> str:
    value = raw.strip()
    if value:
        decode_webhook_secret(value)
    return value


def _seconds_list(max_items: int, max_seconds: float) -> Callable[[str], tuple[float, ...]]:
    def parse(raw: str) -> tuple[float, ...]:
        try:
            values = tuple(float(part) for part in raw.split(","))
        except ValueError:
            raise ValueError(f"expected comma-separated seconds, got {raw!r}") from None
        if not 1 <= len(values) <= max_items or not all(0 <= v <= max_seconds for v in values):
            raise ValueError(f"expected 1..{max_items} values of 0..{max_seconds:g} seconds, got {raw!r}")
        return values

    return parse


def _opt(env: str, parse: Callable[[str], Any], default: Any, help: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "help": help})


#: Settings each translator cannot work without (checked at start, see Settings.check).
_TRANSLATOR_NEEDS = {
    "OPENAI": ("openai_api_key", "openai_model"),
    "BAIDU": ("baidu_appid", "baidu_secret"),
    "DEEPL": ("deepl_auth_key",),
}


@dataclass(frozen=True)
class Settings:
    """The whole configuration. Build it with `Settings.from_env()`; never mutate it."""

    database_url: str = _opt(
        "DATABASE_URL", _url("postgresql", "postgresql+psycopg2", "postgres", "sqlite"), "",
        "SQLAlchemy URL of the database; empty = SQLite file `mjq.sqlite3` under MJQ_DATA_DIR",
    )
    redis_url: str = _opt(
        "REDIS_URL", _url("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0",
        "Redis for the Celery broker, events and leases (may lose everything without losing a job)",
    )
    api_secret: str = _opt(
        "MJQ_API_SECRET", _str, "",
        "when set, requests need header `mj-api-secret: <secret>` or `Authorization: Bearer <secret>`",
    )
    host: str = _opt("MJQ_HOST", _str, "127.0.0.1", "address the web process binds")
    port: int = _opt("MJQ_PORT", _int(1, 65535), 8080, "TCP port of the web process")
    public_url: str = _opt(
        "MJQ_PUBLIC_URL", _url("http", "https"), "",
        "base URL clients reach mjq at (image URLs are built from it); empty = http://MJQ_HOST:MJQ_PORT",
    )
    data_dir: str = _opt("MJQ_DATA_DIR", _str, "instance", "directory for the SQLite file and stored images")
    image_store: str = _opt(
        "MJQ_IMAGE_STORE", _choice_exact("local", "s3"), "local",
        "where stored images live: `local` (files under MJQ_DATA_DIR/images) or `s3` (an S3-compatible bucket)",
    )
    s3_endpoint_url: str = _opt(
        "MJQ_S3_ENDPOINT_URL", _url("http", "https"), "",
        "S3 API endpoint (MinIO, R2, ...); empty = AWS's own for MJQ_S3_REGION",
    )
    s3_bucket: str = _opt("MJQ_S3_BUCKET", _str, "", "bucket of the image store (MJQ_IMAGE_STORE=s3)")
    s3_region: str = _opt("MJQ_S3_REGION", _str, "us-east-1", "region of the bucket (R2: `auto`)")
    s3_access_key_id: str = _opt("MJQ_S3_ACCESS_KEY_ID", _str, "", "S3 access key id; empty = boto3's own lookup")
    s3_secret_access_key: str = _opt("MJQ_S3_SECRET_ACCESS_KEY", _str, "", "S3 secret access key")
    s3_prefix: str = _opt("MJQ_S3_PREFIX", _str, "", "prefix of every object key in the bucket, e.g. `mjq/`")
    s3_addressing: str = _opt(
        "MJQ_S3_ADDRESSING", _choice_exact("path", "virtual"), "path",
        "S3 bucket addressing: `path` (endpoint/bucket/key, MinIO) or `virtual` (bucket.endpoint/key)",
    )
    s3_public_url: str = _opt(
        "MJQ_S3_PUBLIC_URL", _url("http", "https"), "",
        "when set, image URLs point at `<this>/<object key>` directly; empty = mjq serves them at /mj/image/<key>",
    )
    image_proxy_url: str = _opt(
        "MJQ_IMAGE_PROXY_URL", _url("http", "https"), "",
        "CDN prefix of the `proxy` image mode: it replaces MJQ_PUBLIC_URL in image URLs; empty = same as relay",
    )
    thumbnail_pixels: int = _opt(
        "MJQ_THUMBNAIL_PIXELS", _int(32, 2048), 256, "longest side of the WebP thumbnail stored with each image, pixels"
    )
    default_mode: str = _opt(
        "MJQ_DEFAULT_MODE", _choice(*MODES), "FAST", "mode of a job submitted under /mj without a mode prefix"
    )
    sim_job_seconds: float = _opt(
        "MJQ_SIM_JOB_SECONDS", _float(0, 3600), 6.0, "seconds a simulated job takes (0 = instant)"
    )
    sim_progress_steps: int = _opt(
        "MJQ_SIM_PROGRESS_STEPS", _int(0, 6), 6,
        "progress events a simulated job reports (of Midjourney's 15/31/46/62/78/93 %)",
    )
    sim_state_url: str = _opt(
        "MJQ_SIM_STATE_URL", _url("redis", "rediss", "unix"), "",
        "Redis where the simulated upstream counts its submissions and fencing tokens; empty = REDIS_URL "
        "(the fault suite keeps it apart so that killing mjq's Redis does not erase the upstream's memory)",
    )
    sim_accounts: int = _opt(
        "MJQ_SIM_ACCOUNTS", _int(0, 100), 2, "simulator accounts `mjq seed` creates when none exist"
    )
    notify_hook: str = _opt(
        "MJQ_NOTIFY_HOOK", _url("http", "https"), "", "global webhook URL for tasks submitted without notifyHook"
    )
    # Webhook delivery (workers/webhooks.py, docs/architecture.md "Webhooks").
    webhook_secret: str = _opt(
        "MJQ_WEBHOOK_SECRET", _webhook_secret, "",
        "signs every webhook (Standard Webhooks): whsec_ + base64 of 24-64 random bytes; empty = a secret "
        "generated once and kept in the database (`mjq webhook-secret` prints it)",
    )
    webhook_schedule: tuple[float, ...] = _opt(
        "MJQ_WEBHOOK_SCHEDULE", _seconds_list(50, 7 * 86_400), (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0,
                                                                36000.0, 50400.0, 72000.0, 86400.0),
        "seconds before each delivery attempt, comma-separated (the first counts from the event, each next "
        "from the previous failure), each ±10% jitter; after the last the delivery fails",
    )
    webhook_timeout_seconds: float = _opt(
        "MJQ_WEBHOOK_TIMEOUT_SECONDS", _float(0.1, 120), 15.0,
        "total time one delivery attempt may take (connect, send, answer), seconds",
    )
    webhook_progress_interval_seconds: float = _opt(
        "MJQ_WEBHOOK_PROGRESS_INTERVAL_SECONDS", _float(0, 3600), 2.0,
        "progress webhooks of one task are at most one per this many seconds (status changes always go)",
    )
    webhook_sweep_interval_seconds: float = _opt(
        "MJQ_WEBHOOK_SWEEP_INTERVAL_SECONDS", _float(0.1, 300), 5.0,
        "period of the beat sweep that sends due and abandoned webhook deliveries, seconds",
    )
    webhook_allow_private: bool = _opt(
        "MJQ_WEBHOOK_ALLOW_PRIVATE", _bool, False,
        "let webhooks reach loopback, private and link-local addresses and IP-literal hosts (development "
        "and tests only; never in production)",
    )
    max_body_bytes: int = _opt(
        "MJQ_MAX_BODY_BYTES", _int(1024, 1 << 30), 16 * 1024 * 1024, "largest request body, in bytes (413 above)"
    )
    max_image_bytes: int = _opt(
        "MJQ_MAX_IMAGE_BYTES", _int(1024, 1 << 30), 10 * 1024 * 1024, "largest decoded image in a request, in bytes"
    )
    max_image_pixels: int = _opt(
        "MJQ_MAX_IMAGE_PIXELS", _int(1_000_000, 89_478_485), 40_000_000,
        "most pixels (width × height) of an image in a request, read from its header (Pillow's bomb limit at most)",
    )
    max_images: int = _opt("MJQ_MAX_IMAGES", _int(1, 20), 5, "most images in one base64Array")
    max_prompt_chars: int = _opt("MJQ_MAX_PROMPT_CHARS", _int(1, 100_000), 4000, "longest prompt, in characters")
    # Prompt processing at submit (app/services/translation.py, app/services/banned_words.py).
    translator: str = _opt(
        "MJQ_TRANSLATOR", _choice("NONE", "OPENAI", "BAIDU", "DEEPL"), "NONE",
        "translates prompts with CJK text to English: none, openai (any OpenAI-compatible chat API), baidu or deepl",
    )
    translate_timeout_seconds: float = _opt(
        "MJQ_TRANSLATE_TIMEOUT_SECONDS", _float(0.1, 300), 30.0,
        "connect and read timeout of one translation request, seconds (on failure the prompt goes untranslated)",
    )
    openai_base_url: str = _opt(
        "MJQ_OPENAI_BASE_URL", _url("http", "https"), "https://api.openai.com/v1",
        "base URL of the OpenAI-compatible API; `/chat/completions` is appended",
    )
    openai_api_key: str = _opt("MJQ_OPENAI_API_KEY", _str, "", "API key sent as a Bearer token (MJQ_TRANSLATOR=openai)")
    openai_model: str = _opt(
        "MJQ_OPENAI_MODEL", _str, "gpt-4o-mini", "chat model that translates (MJQ_TRANSLATOR=openai)"
    )
    baidu_appid: str = _opt("MJQ_BAIDU_APPID", _str, "", "Baidu Translate app id (MJQ_TRANSLATOR=baidu)")
    baidu_secret: str = _opt(
        "MJQ_BAIDU_SECRET", _str, "", "Baidu Translate secret key, signs each request (MJQ_TRANSLATOR=baidu)"
    )
    baidu_url: str = _opt(
        "MJQ_BAIDU_URL", _url("http", "https"), "https://fanyi-api.baidu.com/api/trans/vip/translate",
        "Baidu Translate endpoint",
    )
    deepl_auth_key: str = _opt("MJQ_DEEPL_AUTH_KEY", _str, "", "DeepL API key (MJQ_TRANSLATOR=deepl)")
    deepl_url: str = _opt(
        "MJQ_DEEPL_URL", _url("http", "https"), "https://api-free.deepl.com/v2/translate",
        "DeepL translate endpoint: api-free.deepl.com for keys ending in `:fx`, api.deepl.com for Pro keys",
    )
    banned_words_file: str = _opt(
        "MJQ_BANNED_WORDS_FILE", _str, "",
        "UTF-8 file of banned words, one word or phrase a line, `#` comments; replaces the shipped list "
        "(empty = the shipped app/data/banned-words.txt)",
    )
    list_page_size: int = _opt(
        "MJQ_LIST_PAGE_SIZE", _int(1, 1000), 100, "default and largest page of GET /mj/task/list, in tasks"
    )
    web_workers: int = _opt("MJQ_WEB_WORKERS", _int(1, 64), 2, "gunicorn worker processes of the web process")
    web_threads: int = _opt("MJQ_WEB_THREADS", _int(1, 256), 8, "threads per gunicorn worker")
    flower_port: int = _opt("MJQ_FLOWER_PORT", _int(1, 65535), 5555, "TCP port of Flower in `make run`")
    worker_concurrency: int = _opt(
        "MJQ_WORKER_CONCURRENCY", _int(1, 10_000), 200,
        "jobs one worker process holds at once (threads; jobs mostly wait on the upstream)",
    )
    visibility_timeout_seconds: int = _opt(
        "MJQ_VISIBILITY_TIMEOUT_SECONDS", _int(10, 86_400), 1800,
        "Redis redelivers an unacknowledged message after this many seconds",
    )
    task_soft_time_limit_seconds: int = _opt(
        "MJQ_TASK_SOFT_TIME_LIMIT_SECONDS", _int(1, 86_400), 1500,
        "soft time limit of one job execution, seconds (prefork pool only; Celery ignores it under threads)",
    )
    task_time_limit_seconds: int = _opt(
        "MJQ_TASK_TIME_LIMIT_SECONDS", _int(1, 86_400), 1620, "hard time limit of one job execution, seconds"
    )
    plans_json: str = _opt(
        "MJQ_PLANS", _str, "",
        'plans as JSON {"name": {"maxUnfinished", "modes", "dailyTasks", "submitsPerMinute", "requestsPerMinute"}}'
        " (requestsPerMinute optional: without it only submits are limited); empty = basic (3 unfinished, FAST/RELAX,"
        " 200/day, 30 submits and 600 requests per minute), vip (20, +TURBO, 2000, 60, 3000), premium (50, +TURBO,"
        " 10000, 120, 6000)",
    )
    prices_json: str = _opt(
        "MJQ_PRICES", _str, "",
        'token prices as JSON {"IMAGINE": [fast, relax], ...} over the defaults (TURBO = 2x fast)',
    )
    default_plan: str = _opt("MJQ_DEFAULT_PLAN", _str, "basic", "plan of keys created without one")
    secret_key: str = _opt(
        "MJQ_SECRET_KEY", _str, "",
        "key that encrypts account secrets at rest (Fernet, urlsafe base64 of 32 bytes); `make run` makes one",
    )
    max_queue_seconds: float = _opt(
        "MJQ_MAX_QUEUE_SECONDS", _float(60, 7 * 86_400), 3600.0,
        "a job that no worker has started this long after its submit fails (the sweeper), seconds",
    )
    retention_days: int = _opt(
        "MJQ_RETENTION_DAYS", _int(0, 36_500), 30,
        "finished tasks older than this many days are deleted with their images and webhook history, in batches;"
        " a task whose webhook is still being retried waits for it; an older open task loses the deliveries settled"
        " before the cutoff (0 = keep forever)",
    )
    slot_lease_seconds: float = _opt(
        "MJQ_SLOT_LEASE_SECONDS", _float(1, 3600), 30.0,
        "an account slot's lease, seconds: a dead holder's slot is free again after this; renewed every third",
    )
    account_choose_rule: str = _opt(
        "MJQ_ACCOUNT_CHOOSE_RULE", _choice_exact("BestWaitIdle", "RoundRobin", "Weight", "Random"), "BestWaitIdle",
        "how a new job picks among eligible accounts",
    )
    max_wait_seconds: float = _opt(
        "MJQ_MAX_WAIT_SECONDS", _float(1, 86_400), 900.0,
        "longest a job waits for a free account slot before it fails, seconds (below the visibility timeout)",
    )
    reconcile_interval_seconds: float = _opt(
        "MJQ_RECONCILE_INTERVAL_SECONDS", _float(1, 3600), 30.0, "period of the reconciler on beat, seconds"
    )
    requeue_after_seconds: float = _opt(
        "MJQ_REQUEUE_AFTER_SECONDS", _float(1, 86_400), 60.0,
        "after Redis lost its data, a running row untouched this long is enqueued again, seconds",
    )
    # Upstream midjourney-proxies (workers/drivers/mjproxy.py).
    mjproxy_poll_seconds: float = _opt(
        "MJQ_MJPROXY_POLL_SECONDS", _float(0.05, 3600), 5.0,
        "period of the fallback poll (one list-by-condition per mjproxy account for the tasks a worker follows), "
        "seconds",
    )
    mjproxy_timeout_seconds: float = _opt(
        "MJQ_MJPROXY_TIMEOUT_SECONDS", _float(0.1, 600), 30.0,
        "connect and read timeout of one call to an upstream midjourney-proxy (submit, poll, image), seconds",
    )
    mjproxy_notify: bool = _opt(
        "MJQ_MJPROXY_NOTIFY", _bool, True,
        "give upstreams a notify hook back to mjq (signed with MJQ_SECRET_KEY, else MJQ_API_SECRET); false = "
        "follow upstream jobs by polling only",
    )
    mjproxy_callback_url: str = _opt(
        "MJQ_MJPROXY_CALLBACK_URL", _url("http", "https"), "",
        "base URL upstreams reach mjq's notify hook at (a host name: midjourney-proxies may refuse IP "
        "addresses); empty = MJQ_PUBLIC_URL",
    )
    # Discord accounts (workers/drivers/discord*.py, workers/gateway/).
    discord_api_url: str = _opt(
        "MJQ_DISCORD_API_URL", _url("http", "https"), "https://discord.com",
        "base URL of Discord's REST API (a reverse proxy, or a fake in tests)",
    )
    discord_gateway_url: str = _opt(
        "MJQ_DISCORD_GATEWAY_URL", _url("ws", "wss"), "wss://gateway.discord.gg", "Discord's gateway websocket URL"
    )
    discord_cdn_url: str = _opt(
        "MJQ_DISCORD_CDN_URL", _url("http", "https"), "",
        "when set, replaces cdn.discordapp.com and media.discordapp.net in result URLs before mjq downloads them",
    )
    discord_upload_url: str = _opt(
        "MJQ_DISCORD_UPLOAD_URL", _url("http", "https"), "",
        "when set, replaces Discord's attachment upload host (discord-attachments-uploads-prd.storage.googleapis.com)",
    )
    discord_inpaint_url: str = _opt(
        "MJQ_DISCORD_INPAINT_URL", _url("http", "https"), "https://936929561302675456.discordsays.com",
        "Midjourney's Vary (Region) iframe app (`/inpaint/api/submit-job` is appended)",
    )
    discord_credits_exhausted: str = _opt(
        "MJQ_DISCORD_CREDITS_EXHAUSTED", _choice_exact("relax", "disable"), "relax",
        "what `Credits exhausted` does to a discord account: limit it to RELAX, or disable it",
    )
    gateway_lease_seconds: float = _opt(
        "MJQ_GATEWAY_LEASE_SECONDS", _float(3, 300), 15.0,
        "a gateway process's hold on an account, seconds: another process takes a dead holder's accounts after "
        "this (plus one poll, a third of it)",
    )
    stream_max_seconds: float = _opt(
        "MJQ_STREAM_MAX_SECONDS", _float(1, 86400), 600.0,
        "longest one Server-Sent Events stream stays open, seconds; clients reconnect with Last-Event-ID",
    )
    stream_heartbeat_seconds: float = _opt(
        "MJQ_STREAM_HEARTBEAT_SECONDS", _float(0.1, 300), 15.0,
        "seconds between keep-alive comments on an idle event stream",
    )
    client_url: str = _opt(
        "MJQ_URL", _url("http", "https"), "",
        "server the `mjq imagine/action/fetch/describe/blend` commands talk to; empty = MJQ_PUBLIC_URL",
    )
    client_api_key: str = _opt(
        "MJQ_API_KEY", _str, "", "key the `mjq` client commands send; empty = MJQ_API_SECRET",
    )
    log_level: str = _opt(
        "MJQ_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level of every process"
    )
    log_format: str = _opt(
        "MJQ_LOG_FORMAT", _choice_exact("text", "json"), "text",
        "`text` (one readable line per record) or `json` (one JSON object per line with task_id and "
        "request_id; use it in production)",
    )
    metrics_token: str = _opt(
        "MJQ_METRICS_TOKEN", _str, "",
        "when set, `GET /metrics` needs `Authorization: Bearer <token>`; empty leaves it open",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Parse every option from `environ` (default `os.environ`); keyword overrides win.

        Raises:
            ConfigError: a variable holds a value its parser refuses; the message names it.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules. Raises ConfigError naming the variables."""
        if self.max_wait_seconds >= self.visibility_timeout_seconds:
            raise ConfigError("MJQ_MAX_WAIT_SECONDS must stay below MJQ_VISIBILITY_TIMEOUT_SECONDS, or Redis would "
                              "redeliver waiting jobs; got "
                              f"{self.max_wait_seconds} / {self.visibility_timeout_seconds}")
        if not self.task_soft_time_limit_seconds < self.task_time_limit_seconds < self.visibility_timeout_seconds:
            raise ConfigError(
                "MJQ_TASK_SOFT_TIME_LIMIT_SECONDS < MJQ_TASK_TIME_LIMIT_SECONDS < MJQ_VISIBILITY_TIMEOUT_SECONDS "
                f"must hold, got {self.task_soft_time_limit_seconds} / {self.task_time_limit_seconds} / "
                f"{self.visibility_timeout_seconds}"
            )
        if self.image_store == "s3" and not self.s3_bucket.strip():
            raise ConfigError("MJQ_IMAGE_STORE=s3 needs MJQ_S3_BUCKET, which is empty")
        env = {f.name: f.metadata["env"] for f in fields(self)}
        for name in _TRANSLATOR_NEEDS.get(self.translator, ()):
            if not getattr(self, name).strip():
                raise ConfigError(f"MJQ_TRANSLATOR={self.translator.lower()} needs {env[name]}, which is empty")

    # Derived values: computed, never configured twice.
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{Path(self.data_dir).resolve() / 'mjq.sqlite3'}"

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def images_dir(self) -> Path:
        return Path(self.data_dir).resolve() / "images"


def normalize_database_url(url: str) -> str:
    """`postgres://` and `postgresql://` mean psycopg2 (SQLAlchemy 2.1 would pick psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def options() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every option, in declaration order (for docs and `mjq config`)."""
    return [(f.metadata["env"], repr(f.default) if f.default != "" else "(empty)", f.metadata["help"])
            for f in fields(Settings)]

"""Acceptance: a dump of the database holds no plaintext API key or account secret (PostgreSQL, pg_dump)."""
from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess

import pytest
from sqlalchemy import delete

from app import create_app
from app.crypto import SecretBox, generate_key
from app.models import Account
from app.models_tenancy import ApiKey
from app.services.account_admin import account_secrets
from app.services.keys import create_key, hash_key
from app.services.plans import DEFAULT_PLANS

pytestmark = pytest.mark.integration

#: Seconds pg_dump may take on the small test database.
DUMP_TIMEOUT_SECONDS = 60


def pg_dump(url: str) -> str:
    binary = shutil.which("pg_dump")
    assert binary is not None, "pg_dump is not on PATH"
    done = subprocess.run([binary, f"--dbname={url.replace('+psycopg2', '')}"], capture_output=True, text=True,
                          timeout=DUMP_TIMEOUT_SECONDS, check=True)
    return done.stdout


def test_a_database_dump_holds_no_plaintext_api_key_or_account_secret(stack_settings, session_factory, pg_url):
    settings = dataclasses.replace(stack_settings, secret_key=generate_key())
    client = create_app(settings).test_client()
    upstream_secret = "mjproxy-secret-" + secrets.token_hex(12)
    discord_token = "discord-token-" + secrets.token_hex(16)
    name = "dump-check-" + secrets.token_hex(4)
    # Disabled: the session's other integration tests must never pick these accounts for a job.
    bodies = [
        {"id": "dump-mjproxy", "name": name, "driver": "mjproxy", "enable": False,
         "settings": {"baseUrl": "https://mj.example.com", "secret": upstream_secret}},
        {"id": "dump-discord", "name": name, "driver": "discord", "enable": False,
         "settings": {"guildId": "1123456789012345678", "channelId": "1123456789012345679",
                      "userToken": discord_token}},
    ]
    try:
        for body in bodies:
            answer = client.post("/mj/account/create", json=body).get_json()
            assert answer["code"] == 1, answer
        with session_factory() as session:
            key_row, api_key = create_key(session, name, "basic", "user", DEFAULT_PLANS)
            box = SecretBox.from_settings(settings)
            assert account_secrets(session.get(Account, "dump-mjproxy"), box) == {"secret": upstream_secret}
            assert account_secrets(session.get(Account, "dump-discord"), box) == {"userToken": discord_token}

        dump = pg_dump(pg_url)
        checks = {
            "account secret absent": upstream_secret not in dump,
            "Discord token absent": discord_token not in dump,
            "API key absent": api_key not in dump and api_key[len("mjq_"):] not in dump,
        }
        print(f"\npg_dump: {len(dump.encode())} bytes, {dump.count(chr(10))} lines")
        for what, passed in checks.items():
            print(f"  {what}: {'yes' if passed else 'NO'}")
        # The dump is real: it holds the rows, with the key's hash and the secrets' ciphertext in their place.
        assert name in dump and hash_key(api_key) in dump and "gAAAAA" in dump
        assert all(checks.values()), checks
    finally:
        with session_factory() as session:
            session.execute(delete(Account).where(Account.id.in_([b["id"] for b in bodies])))
            session.execute(delete(ApiKey).where(ApiKey.name == name))
            session.commit()

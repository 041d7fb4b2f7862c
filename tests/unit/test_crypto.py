"""Account secrets at rest: the Fernet box under MJQ_SECRET_KEY, and the key `mjq run` keeps."""
from __future__ import annotations

import stat

import pytest

from app.crypto import DEV_KEY_FILE, SecretBox, SecretKeyMissing, SecretUnreadable, dev_secret_key, generate_key
from config import ConfigError, Settings


def test_a_secret_round_trips_and_its_ciphertext_does_not_show_it():
    box = SecretBox.from_key(generate_key())
    token = box.encrypt("discord-token-123")
    assert "discord-token-123" not in token and token.isascii()
    assert box.decrypt(token) == "discord-token-123"
    assert box.encrypt("discord-token-123") != token  # a fresh IV each time: equal secrets do not look equal


def test_a_malformed_key_is_a_config_error_naming_the_variable_but_not_the_value():
    with pytest.raises(ConfigError, match="MJQ_SECRET_KEY") as caught:
        SecretBox.from_settings(Settings.from_env({"MJQ_SECRET_KEY": "hunter2-not-a-fernet-key"}))
    assert "hunter2" not in str(caught.value)


def test_without_a_key_nothing_is_encrypted_or_decrypted(tmp_path):
    box = SecretBox.from_settings(Settings.from_env({"MJQ_DATA_DIR": str(tmp_path)}))
    assert not box.has_key
    with pytest.raises(SecretKeyMissing, match="set it"):
        box.encrypt("s")
    with pytest.raises(SecretKeyMissing):
        box.decrypt("gAAAA")


def test_a_secret_encrypted_under_another_key_is_unreadable():
    token = SecretBox.from_key(generate_key()).encrypt("s")
    with pytest.raises(SecretUnreadable, match="MJQ_SECRET_KEY"):
        SecretBox.from_key(generate_key()).decrypt(token)


def test_mjq_run_makes_its_key_once_readable_by_its_owner_only(tmp_path):
    data_dir = tmp_path / "data"
    first = dev_secret_key(data_dir)
    assert dev_secret_key(data_dir) == first
    mode = stat.S_IMODE((data_dir / DEV_KEY_FILE).stat().st_mode)
    assert mode == 0o600
    SecretBox.from_key(first).encrypt("works")


def test_commands_beside_a_make_run_stack_use_the_key_it_kept(tmp_path):
    key = dev_secret_key(tmp_path)
    box = SecretBox.from_settings(Settings.from_env({"MJQ_DATA_DIR": str(tmp_path)}))
    assert SecretBox.from_key(key).decrypt(box.encrypt("s")) == "s"
    explicit = generate_key()
    chosen = SecretBox.from_settings(Settings.from_env({"MJQ_DATA_DIR": str(tmp_path), "MJQ_SECRET_KEY": explicit}))
    assert SecretBox.from_key(explicit).decrypt(chosen.encrypt("s")) == "s"  # the variable wins over the file


def test_a_damaged_kept_key_names_the_file(tmp_path):
    (tmp_path / DEV_KEY_FILE).write_text("garbage\n")
    with pytest.raises(ConfigError, match=DEV_KEY_FILE):
        dev_secret_key(tmp_path)

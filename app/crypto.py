"""Account secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under MJQ_SECRET_KEY.

Each secret is its own Fernet token, so one secret can be replaced without reading the
others, and a database dump shows only ciphertext. Without MJQ_SECRET_KEY mjq refuses to
store a secret rather than keep it in plaintext or invent a key nobody can find again
(`mjq run` makes and keeps one for the embedded default, see app/devstack.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from config import ConfigError, MjqError, Settings

#: The variable that holds the key; named in every error about it.
SECRET_KEY_ENV = "MJQ_SECRET_KEY"
#: A shell line that prints a new key.
MAKE_KEY_COMMAND = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
#: Where `mjq run` keeps the key it made, under MJQ_DATA_DIR.
DEV_KEY_FILE = "secret.key"


class SecretKeyMissing(MjqError):
    """Raised when a secret must be encrypted or decrypted but MJQ_SECRET_KEY is empty."""


class SecretUnreadable(MjqError):
    """Raised when a stored secret does not decrypt with MJQ_SECRET_KEY (another key, or altered)."""


class SecretBox:
    """Encrypts and decrypts short secrets (tokens, API keys) with one Fernet key, or none."""

    def __init__(self, fernet: Fernet | None) -> None:
        self._fernet = fernet

    @classmethod
    def from_key(cls, key: str) -> SecretBox:
        """A box for `key` (urlsafe base64 of 32 bytes; empty = no key).

        Raises:
            ConfigError: the key is not a Fernet key; the message names MJQ_SECRET_KEY, never the value.
        """
        key = key.strip()
        if not key:
            return cls(None)
        try:
            return cls(Fernet(key.encode()))
        except (ValueError, TypeError):
            raise ConfigError(f"{SECRET_KEY_ENV}: expected urlsafe base64 of 32 bytes (44 characters; make one with "
                              f"`{MAKE_KEY_COMMAND}`), got a value of {len(key)} characters") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box for MJQ_SECRET_KEY, else for the key `mjq run` keeps under MJQ_DATA_DIR (if it made one),
        so `mjq accounts` next to a `make run` stack reads what the stack wrote. No key is ever made here.

        Raises ConfigError when the key is malformed.
        """
        if settings.secret_key.strip():
            return cls.from_key(settings.secret_key)
        kept = Path(settings.data_dir) / DEV_KEY_FILE
        return cls.from_key(_kept_key(kept)) if kept.is_file() else cls(None)

    @property
    def has_key(self) -> bool:
        return self._fernet is not None

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise SecretKeyMissing(f"{SECRET_KEY_ENV} is not set, so account secrets cannot be stored or read; set it "
                                   f"to a Fernet key (`{MAKE_KEY_COMMAND}`) in every process's environment")
        return self._fernet

    def encrypt(self, plaintext: str) -> str:
        """A Fernet token (ASCII) for `plaintext`. Raises SecretKeyMissing without a key."""
        return self._require().encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext of `token`. Raises SecretKeyMissing without a key, SecretUnreadable for a foreign token."""
        try:
            return self._require().decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(f"a stored secret does not decrypt with {SECRET_KEY_ENV}; was the key changed?") \
                from None


def generate_key() -> str:
    """A fresh Fernet key (urlsafe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode("ascii")


def dev_secret_key(data_dir: Path) -> str:
    """The key `mjq run` uses when MJQ_SECRET_KEY is unset: made once, kept in DATA_DIR/secret.key (mode 0600).

    Raises ConfigError when the kept file does not hold a Fernet key.
    """
    path = data_dir / DEV_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two `mjq run` starting together must not each write a different key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _kept_key(path)
    key = generate_key()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _kept_key(path: Path) -> str:
    """The key in `path`. Raises ConfigError naming the file when it holds no Fernet key."""
    key = path.read_text().strip()
    try:
        SecretBox.from_key(key)  # a damaged file fails at start, not at the first secret
    except ConfigError as exc:
        raise ConfigError(f"{path} (the kept {SECRET_KEY_ENV}): {exc}") from None
    return key

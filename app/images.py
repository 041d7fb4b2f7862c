"""Stored images: the bytes live under MJQ_DATA_DIR/images (LocalImageStore) or in an S3-compatible
bucket (S3ImageStore), so clients never depend on expiring upstream URLs. Both are served by the
API at `/mj/image/<key>` unless MJQ_S3_PUBLIC_URL points clients at the bucket directly.
`make_image_store(settings)` is the one place the API and the workers build theirs."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from config import Settings

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}$")

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp",
                 "gif": "image/gif"}


class ImageStore(Protocol):
    #: True when every URL of the store is mjq's own `/mj/image/<key>`: an image missing there can be made
    #: on its first request (grid cells, app/image_variants.py) instead of when its job ends.
    served_by_mjq: bool

    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key` and return its public URL."""

    def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None."""

    def url(self, key: str) -> str:
        """The public URL of `key`."""

    def key_of(self, url: str) -> str | None:
        """The key whose public URL is `url`, or None for a URL this store did not make."""

    def delete_task(self, task_id: int) -> int:
        """Delete every image stored under `<task_id>/`; returns how many went."""

    def delete_uploads_before(self, day: str) -> int:
        """Delete the uploads (`uploads/<yyyymmdd>/…`) of every day before `day` (yyyymmdd); returns how many."""


#: Where `/submit/upload-discord-images` stores its images, a folder per UTC day (`uploads/<yyyymmdd>/…`), so
#: retention drops a whole day at once; they belong to no task.
UPLOADS = "uploads"


def upload_day(ms: int) -> str:
    """The uploads folder of the UTC day of epoch-millisecond `ms` (yyyymmdd)."""
    return time.strftime("%Y%m%d", time.gmtime(ms / 1000))


def is_upload_day(name: str) -> bool:
    return len(name) == 8 and name.isascii() and name.isdigit()


def valid_key(key: str) -> bool:
    """Keys are 1–4 path segments of safe characters: no `..`, no absolute paths."""
    return bool(_KEY_RE.match(key)) and ".." not in key


class LocalImageStore:
    """Files under `root`, served at `<base_url>/mj/image/<key>`."""

    served_by_mjq = True

    def __init__(self, root: Path, base_url: str) -> None:
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")

    def _path(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError(f"invalid image key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half an image.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
        return self.url(key)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return None

    def url(self, key: str) -> str:
        return f"{self.base_url}/mj/image/{key}"

    def key_of(self, url: str) -> str | None:
        return key_under(url, f"{self.base_url}/mj/image/")

    def delete_task(self, task_id: int) -> int:
        return self._delete_folder(self.root / str(int(task_id)))

    def delete_uploads_before(self, day: str) -> int:
        folder = self.root / UPLOADS
        days = [d for d in folder.iterdir() if d.is_dir() and is_upload_day(d.name) and d.name < day] \
            if folder.is_dir() else []
        return sum(self._delete_folder(d) for d in days)

    @staticmethod
    def _delete_folder(folder: Path) -> int:
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        shutil.rmtree(folder, ignore_errors=True)
        return len(files)


def key_under(url: str, prefix: str) -> str | None:
    """The valid key that follows `prefix` in `url` (query ignored), or None."""
    if not url.startswith(prefix):
        return None
    key = url[len(prefix):].split("?", 1)[0]
    return key if valid_key(key) else None


class S3ImageStore:
    """Objects `<prefix><key>` in one bucket of an S3-compatible service (AWS, MinIO, R2, ...).

    URLs are `<public_url>/<prefix><key>` when the bucket is public (or behind a CDN), else mjq's
    own `<base_url>/mj/image/<key>`, which reads the object back through `get`.
    """

    def __init__(self, client: Any, bucket: str, base_url: str, prefix: str = "", public_url: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix
        self.public_url = public_url.rstrip("/")
        self.served_by_mjq = not self.public_url

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ImageStore:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region or None,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            # Bounded calls: a stalled bucket fails one image, not a worker thread forever.
            config=Config(s3={"addressing_style": settings.s3_addressing}, connect_timeout=S3_TIMEOUT_SECONDS,
                          read_timeout=S3_TIMEOUT_SECONDS, retries={"max_attempts": 3, "mode": "standard"}),
        )
        return cls(client, settings.s3_bucket, settings.effective_public_url, settings.s3_prefix,
                   settings.s3_public_url)

    def _object(self, key: str) -> str:
        if not valid_key(key):
            raise ValueError(f"invalid image key {key!r}")
        return f"{self.prefix}{key}"

    def put(self, key: str, data: bytes) -> str:
        ext = key.rsplit(".", 1)[-1].lower()
        # One PUT is atomic on S3: a reader sees the old object, no object, or all of this one.
        self.client.put_object(Bucket=self.bucket, Key=self._object(key), Body=data,
                               ContentType=CONTENT_TYPES.get(ext, "application/octet-stream"))
        return self.url(key)

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
        except ValueError:
            return None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return bytes(response["Body"].read())

    def delete_task(self, task_id: int) -> int:
        """Delete the objects under `<prefix><task_id>/`, a page (at most 1,000) per request."""
        return self._delete_under(self._object(str(int(task_id))) + "/")

    def delete_uploads_before(self, day: str) -> int:
        """One listing of the day folders under `<prefix>uploads/`, then the old ones' objects."""
        root = self._object(UPLOADS) + "/"
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root,
                                                                           Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = str(common["Prefix"])[len(root):].rstrip("/")
                if is_upload_day(name) and name < day:
                    deleted += self._delete_under(str(common["Prefix"]))
        return deleted

    def _delete_under(self, root: str) -> int:
        deleted = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                errors = answer.get("Errors", [])
                if errors:
                    raise OSError(f"S3 refused to delete {len(errors)} objects under {root}: {errors[0]}")
                deleted += len(keys)
        return deleted

    def url(self, key: str) -> str:
        if self.public_url:
            return f"{self.public_url}/{self._object(key)}"
        return f"{self.base_url}/mj/image/{key}"

    def key_of(self, url: str) -> str | None:
        if self.public_url:
            return key_under(url, f"{self.public_url}/{self.prefix}")
        return key_under(url, f"{self.base_url}/mj/image/")


#: Connect and read timeout of one S3 call, seconds.
S3_TIMEOUT_SECONDS = 10


def make_image_store(settings: Settings) -> ImageStore:
    """The image store `settings` name (MJQ_IMAGE_STORE): the API and every worker build theirs here."""
    if settings.image_store == "s3":
        return S3ImageStore.from_settings(settings)
    return LocalImageStore(settings.images_dir, settings.effective_public_url)

"""Storage URIs → ``pyarrow.fs`` filesystems: local paths, ``file://``, ``s3://`` (with
typed options in the URI's query), and whatever else ``pyarrow`` resolves (``gs://``,
``hdfs://``). Resolved once per URI per process.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from ...errors import LocationError

_RESOLVED: dict[str, tuple[pafs.FileSystem, str, bool]] = {}


def resolve(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, root path, is local)`` of a storage URI, cached per process."""
    cached = _RESOLVED.get(uri)
    if cached is None:
        cached = _RESOLVED[uri] = _resolve(uri)
    return cached


def _resolve(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        local = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), str(Path(local).expanduser().resolve()), True
    try:
        if scheme == "s3":
            fs, path = _s3_from_uri(uri)
        else:
            fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise LocationError(
            f"cannot open storage URI {uri!r}: {exc}; use a local path, file://, s3://, "
            "gs:// or hdfs://"
        ) from exc
    return fs, path.rstrip("/"), False



# S3FileSystem options a store URI may carry as ``?key=value`` (typed here, so a typo
# is an error rather than a silently ignored option). Credentials are refused: the URI
# travels to every Ray task and into error messages and logs.
_S3_STR = ("region", "scheme", "endpoint_override", "tls_ca_file_path", "role_arn",
           "session_name", "external_id")
_S3_BOOL = ("anonymous", "allow_delayed_open", "background_writes", "force_virtual_addressing",
            "allow_bucket_creation", "allow_bucket_deletion")
_S3_FLOAT = ("request_timeout", "connect_timeout")
_S3_SECRET = ("access_key", "secret_key", "session_token")


def _s3_options(uri: str) -> tuple[dict, str]:
    """``S3FileSystem`` keyword arguments and ``bucket/key`` path for an ``s3://`` URI.

    Precedence: URI query parameters, then ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; credentials come
    from the AWS SDK's usual chain (environment, profile, instance role). Small objects
    below the upload part size are written with one PutObject (``allow_delayed_open``)
    rather than a multipart upload: fewer round trips, no dangling upload after a
    crash, and it works with S3 look-alikes whose multipart support is partial.
    """
    parsed = urlparse(uri)
    if parsed.username or parsed.password:
        raise LocationError("do not put credentials in the store URI (s3://KEY:SECRET@...): set "
                         "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or use a profile or role")
    path = (parsed.netloc + parsed.path).rstrip("/")
    if not parsed.netloc:
        raise LocationError(f"storage URI {uri!r} names no bucket: use s3://BUCKET/PATH")
    kwargs: dict = {"allow_delayed_open": True}
    for key, value in parse_qsl(parsed.query, keep_blank_values=True):
        if key in _S3_STR:
            kwargs[key] = value
        elif key in _S3_BOOL:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise LocationError(f"S3 option {key}={value!r} in {uri!r} must be true or false")
            kwargs[key] = value.lower() in ("1", "true", "yes")
        elif key in _S3_FLOAT:
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise LocationError(f"S3 option {key}={value!r} in {uri!r} must be a number") \
                    from None
        elif key in _S3_SECRET:
            raise LocationError(f"do not put {key} in the store URI: set it in the environment "
                             "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)")
        else:
            known = ", ".join(sorted(_S3_STR + _S3_BOOL + _S3_FLOAT))
            raise LocationError(f"unknown S3 option {key!r} in {uri!r}; known: {known}")
    if "endpoint_override" not in kwargs:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs["endpoint_override"] = ep.netloc
            kwargs.setdefault("scheme", ep.scheme)
    if "region" not in kwargs:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        elif "endpoint_override" not in kwargs:  # real AWS, region unknown: ask the bucket
            with contextlib.suppress(OSError, pa.ArrowException):
                kwargs["region"] = pafs.resolve_s3_region(parsed.netloc)
    return kwargs, path


def _s3_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """S3 with the usual environment honoured (endpoint, region, credentials)."""
    kwargs, path = _s3_options(uri)
    return pafs.S3FileSystem(**kwargs), path



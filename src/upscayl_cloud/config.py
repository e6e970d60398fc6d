"""Every setting of the service, typed, in one place.

Read from ``UPSCAYL_*`` environment variables (and an optional ``.env`` file).
Nothing here has to be set: ``upscayl-cloud serve`` runs with the defaults,
keeping its database, objects and server secret under ``UPSCAYL_DATA_DIR``.
The same settings select the scale-out stack later (PostgreSQL URL, S3), so
code never changes between the two. ``docs/configuration.md`` lists them all.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import idna
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The spec's ``x-rateLimit`` per operation: requests per hour per key.
SPEC_RATE_LIMITS: dict[str, str] = {
    "get-upload-url": "100/hour",
    "get-upscayl-history": "100/hour",
    "get-task-status": "100/hour",
    "start-task": "50/hour",
    "complete-multipart-upload": "50/hour",
}

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB
HOUR = 3600
DAY = 24 * HOUR
#: Longest any retention may be; far inside int64 milliseconds.
TEN_YEARS = 3650 * DAY
#: SigV4 signs a link for at most seven days (S3 refuses longer).
MAX_LINK_SECONDS = 7 * DAY
#: S3's largest object and largest part.
MAX_OBJECT_BYTES = 5 * TIB
MAX_PART_BYTES = 5 * GIB
#: Most threads of one kind a setting may ask for: far above any machine's
#: cores, far below what crashes ncnn's thread pool (100,000 did).
MAX_THREADS = 256
#: The largest credit amount and top-up balance: far below int64's limit, so
#: a balance plus any price or refund stays a database integer.
MAX_CREDITS = 10**15


def _origin(entry: str) -> str:
    """``entry`` as a browser's ``Origin`` header spells it (lower case, IDNA,
    IPv6 compressed, no default port), or ValueError saying what is wrong."""
    entry = entry.strip()
    if entry == "*":
        return entry
    wrong = ValueError(
        f"{entry!r} is not an origin: write scheme://host[:port], such as "
        "https://app.example.org (no path), or * for any"
    )
    if any(mark in entry for mark in "?#@\\ ") or entry.rstrip("/").endswith(":"):
        raise wrong
    try:
        parts = urlsplit(entry.rstrip("/"))
        port = parts.port
    except ValueError as exc:
        raise wrong from exc
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host or parts.path or port == 0:
        raise wrong
    host = _origin_host(host)
    if host is None:
        raise wrong
    if port == {"http": 80, "https": 443}[scheme]:  # browsers leave default ports out
        port = None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _origin_host(host: str) -> str | None:
    """The host as browsers serialise it, or None when it cannot be one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{address.compressed}]"
    if address is not None:
        return str(address)
    if host.replace(".", "").isdigit():  # 127.1: browsers widen it, refuse it
        return None
    if host.isascii():
        ascii_host = host.lower()  # underscores too: browsers keep them (my_box.lan)
    else:
        # UTS 46 without transitional mapping, as browsers do: straße.de is
        # xn--strae-oqa.de. Python's own "idna" codec (IDNA 2003) would make
        # it strasse.de, another domain, perhaps someone else's.
        try:
            ascii_host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError:
            return None
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
    return ascii_host if set(ascii_host) <= allowed else None


def _is_limit(text: str) -> bool:
    """Whether ``limits`` reads ``text`` as one or more limits (``;``, ``,``
    or ``|`` between them), each of at least one request in a period of at
    least one unit: the library reads ``5 per 0 minute`` as 5 per minute."""
    from limits import parse_many

    try:
        items = parse_many(text)
    except ValueError:
        return False
    try:  # the library's own grammar; should it move, only this extra check goes
        from limits.util import SEPARATORS, SINGLE_EXPR
    except ImportError:
        return bool(items) and all(item.amount >= 1 for item in items)
    for part in SEPARATORS.split(text):
        match = SINGLE_EXPR.match(part)
        multiples = match.group(3) if match else None
        if multiples is not None and int(multiples) == 0:
            return False
    return bool(items) and all(item.amount >= 1 for item in items)


def _counter_storage_problem(uri: str) -> str | None:
    """Why ``limits`` cannot build its Redis storage from ``uri`` (None when
    it can), found without connecting: a Redis or Sentinel storage is built
    as the API builds it (their clients connect on first use); a cluster's
    client connects as it is made, so its node list is only read, as
    ``limits`` reads it. The reason never repeats the URI's password."""
    from limits.errors import ConfigurationError
    from limits.storage import (
        SCHEMES,
        RedisClusterStorage,
        RedisStorage,
        storage_from_string,
    )

    storage = SCHEMES[uri.partition("://")[0]]
    try:
        options = counter_storage_options(uri)
        if issubclass(storage, RedisClusterStorage):
            try:  # a private module of limits: should it move, the check is skipped
                from limits._storage_scheme import parse_storage_uri
            except ImportError:
                return None
            if not parse_storage_uri(uri).locations:
                return "no host:port of a cluster node in it"
        elif issubclass(storage, RedisStorage):  # the Sentinel's too
            storage_from_string(uri, **options)
    except (ConfigurationError, ValueError, TypeError) as exc:
        reason = exc.__cause__ or exc  # limits wraps urllib's ValueError, the precise one
        return without_credentials(str(reason) or type(reason).__name__, uri)
    return None


def counter_storage_options(uri: str) -> dict[str, object]:
    """The connection options in the query of a Sentinel or cluster counter
    URI (``?socket_timeout=0.5&socket_connect_timeout=0.5``), as keyword
    arguments for ``limits``' ``storage_from_string``; empty for any other.

    ``limits`` hands a ``redis://`` URI to redis-py, which reads its query,
    but builds a Sentinel's or a cluster's clients from the host list alone:
    their query was dropped, and with it the short timeouts the deployment
    guide recommends. Read here as redis-py reads a ``redis://`` query (known
    options by their type, others as text); a Sentinel's own connections get
    the ``socket_*`` ones too, as redis-py gives them when not told otherwise
    (``limits`` tells it otherwise). A value of the wrong type raises
    ``ValueError`` naming the option."""
    from limits.storage import SCHEMES, RedisClusterStorage, RedisSentinelStorage

    storage = SCHEMES.get(uri.partition("://")[0])
    if storage is None or not issubclass(storage, RedisSentinelStorage | RedisClusterStorage):
        return {}
    try:
        from redis.connection import URL_QUERY_ARGUMENT_PARSERS
    except ImportError:  # limits says the package is missing, when it builds the storage
        return {}
    options: dict[str, object] = {}
    for name, values in parse_qs(urlsplit(uri).query).items():
        parse = URL_QUERY_ARGUMENT_PARSERS.get(name)
        try:
            options[name] = parse(values[0]) if parse else values[0]
        except (TypeError, ValueError):
            raise ValueError(f"invalid value for {name!r} in its query") from None
    if issubclass(storage, RedisSentinelStorage):
        sockets = {k: v for k, v in options.items() if k.startswith("socket_")}
        if sockets:
            options["sentinel_kwargs"] = sockets
    return options


def without_credentials(reason: str, uri: str) -> str:
    """``reason`` with the URI, and what may be its user name and password
    (all before its last ``@``), blotted out; the pieces too, as a password
    holding ``/`` is cut there, and its end read as a host or port. A piece
    too short to blot out (it would match inside other words) that the
    reason still quotes makes the whole reason go: it may be a password."""
    userinfo = uri.partition("://")[2].rpartition("@")[0]
    pieces = [p for p in [uri, userinfo, *re.split(r"[:/?#]", userinfo)] if p]
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3:
            reason = reason.replace(piece, "***")
    if any(f"'{piece}'" in reason or f'"{piece}"' in reason for piece in pieces):
        return (
            "its user name or password was read as part of its address (percent-encode "
            "any '/', '?', '#' or '@' in them)"
        )
    return reason


def _in_memory(database: str | None, query: Mapping[str, object]) -> bool:
    """Whether a SQLite URL's database is one in memory (``sqlite://``,
    ``sqlite:///:memory:``, ``sqlite:///file::memory:?uri=true``,
    ``?mode=memory``)."""
    return (
        not database
        or database == ":memory:"
        or database.startswith("file::memory:")
        or query.get("mode") in ("memory", ("memory",))
    )


class StorageBackend(StrEnum):
    local = "local"
    s3 = "s3"


class S3AddressingStyle(StrEnum):
    """``path`` for SeaweedFS and MinIO; ``virtual`` for AWS S3."""

    path = "path"
    virtual = "virtual"
    auto = "auto"


class Settings(BaseSettings):
    """The service's configuration. Field names map to ``UPSCAYL_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="UPSCAYL_", env_file=".env", extra="ignore", validate_default=True
    )

    # -- where things live -------------------------------------------------
    #: Root of everything the embedded stack writes (database, objects, secret).
    data_dir: Path = Path("./data")
    #: SQLAlchemy URL; empty means ``sqlite:///<data_dir>/upscayl.db``.
    database_url: str = ""
    storage_backend: StorageBackend = StorageBackend.local
    #: Folder of the local object store; empty means ``<data_dir>/objects``.
    storage_dir: Path | None = None
    #: Base URL put in signed links (e.g. behind a proxy). Empty: taken from
    #: the request that asks for the link.
    public_url: str = ""

    # -- S3 storage (``storage_backend=s3``; docs/deployment.md) -----------------
    #: The bucket every object lives in.
    s3_bucket: str = ""
    #: How the service reaches the store; empty: AWS S3 for the region.
    s3_endpoint_url: str = ""
    #: How clients reach the store, when that differs (SigV4 signs the host).
    s3_public_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    #: Empty key and secret: boto3's usual chain (environment, ~/.aws, role).
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    s3_addressing_style: S3AddressingStyle = S3AddressingStyle.path
    #: Create the bucket at startup when it is missing (small installs).
    s3_create_bucket: bool = False
    #: Longest wait for a TCP connection to the store. Short: a store that
    #: does not accept is down, and a request should fail fast (503), not hang.
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=600, allow_inf_nan=False)
    #: Longest silence while waiting for the store's answer. Long enough for the
    #: store to take in a 100 MB object before it answers the upload.
    s3_read_timeout_seconds: float = Field(default=60.0, gt=0, le=HOUR, allow_inf_nan=False)
    #: Tries per store call, the first included (botocore "standard" retries).
    #: Few: each try can wait the timeouts above, and a caller retries a 503.
    s3_max_attempts: int = Field(default=3, ge=1, le=10)

    # -- secrets ------------------------------------------------------------
    #: Comma-separated HMAC secrets. The first signs; all verify (rotation).
    #: Empty: a random one is created once in ``<data_dir>/secret.key``.
    secret_keys: str = ""

    # -- HTTP ---------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Comma-separated origins (``https://app.example.org``) whose web pages
    #: may call the API from a browser, or ``*`` for any page. Empty: none;
    #: the server's own page at ``/`` is same-origin and needs no CORS.
    cors_origins: str = ""

    # -- credits --------------------------------------------------------------
    #: Price of one image, reserved at start-task and captured on success.
    credits_per_image: int = Field(default=1, ge=0, le=10**9)
    #: Credits of the key created on the first start of ``serve``.
    first_key_credits: int = Field(default=100, ge=0, le=MAX_CREDITS)

    # -- rate limits ------------------------------------------------------------
    rate_limits_enabled: bool = True
    #: Per-operation overrides as JSON, e.g. ``{"start-task": "5/minute"}``.
    #: Operations not named keep the spec's ``x-rateLimit``.
    rate_limits: dict[str, str] = Field(default_factory=dict)
    #: Where counters live, as a ``limits`` storage URI: ``memory://`` (this
    #: process) or e.g. ``redis://host:6379`` (shared by every API replica;
    #: needs the ``redis`` package).
    rate_limit_storage_uri: str = "memory://"

    # -- uploads ------------------------------------------------------------------
    #: Largest accepted image, as in the spec (100 MB).
    max_upload_bytes: int = Field(default=104_857_600, ge=1, le=MAX_OBJECT_BYTES)
    #: Declared bytes an account's uploads may hold while no task names them
    #: (until they expire); get-upload-url refuses more with 429. Uploads
    #: cost no credits, so without a cap a key with none could park 100
    #: uploads an hour of 100 MB each for the retention (about 240 GB). 0
    #: (the default) means two full batches of maximum-size files,
    #: 2 x max_files_per_task x max_upload_bytes (about 10 GB): a client that
    #: uploads a batch, then starts its task, as this project's client and
    #: web page do, never meets it, whatever those two are set to.
    max_pending_upload_bytes: int = Field(default=0, ge=0, le=2**62)
    #: How long a pre-signed upload URL stays valid.
    upload_url_ttl_seconds: int = Field(default=3600, ge=1, le=MAX_LINK_SECONDS)
    #: Uploaded originals are deleted this long after upload.
    upload_retention_seconds: int = Field(default=24 * 3600, ge=1, le=TEN_YEARS)
    #: Uploads at least this large also get multipart URLs (see docs/api.md).
    multipart_threshold_bytes: int = Field(default=64 * MIB, ge=1, le=MAX_OBJECT_BYTES)
    #: Part size offered for multipart uploads; S3's minimum is 5 MiB.
    multipart_part_bytes: int = Field(default=8 * MIB, ge=5 * MIB, le=MAX_PART_BYTES)
    #: Most files one start-task may name (a batch).
    max_files_per_task: int = Field(default=50, ge=1, le=10_000)
    #: Largest accepted source image, width x height, read from the header.
    max_source_pixels: int = Field(default=50_000_000, ge=1, le=10**10)

    # -- results ------------------------------------------------------------------
    #: Results and thumbnails are deleted this long after the task completes.
    result_retention_seconds: int = Field(default=7 * DAY, ge=1, le=TEN_YEARS)
    #: Lifetime of a download or thumbnail link handed out by get-task-status
    #: (never beyond the object's own expiry).
    download_url_ttl_seconds: int = Field(default=3600, ge=1, le=MAX_LINK_SECONDS)
    thumbnail_long_edge: int = Field(default=256, ge=16, le=4096)

    # -- workers and the queue ---------------------------------------------------
    #: Worker threads inside ``serve``; 0 runs an API-only process.
    workers: int = Field(default=1, ge=0, le=MAX_THREADS)
    #: Inference threads per worker; 0 shares this machine's cores between workers.
    engine_threads: int = Field(default=0, ge=0, le=MAX_THREADS)
    #: Use a GPU when the backend sees one.
    engine_use_gpu: bool = True
    #: Runtime for the networks: ``auto`` picks by this machine's features
    #: (``upscayl-cloud models backends`` says what and why).
    engine_backend: Literal["auto", "ncnn", "openvino", "onnxruntime"] = "auto"
    #: ``auto``: bf16 on AMX CPUs with OpenVINO, fp16 on GPUs; ``fp32``: always full precision.
    engine_precision: Literal["auto", "fp32"] = "auto"
    #: Compiled networks kept between runs; empty means ``<data_dir>/cache``.
    engine_cache_dir: Path | None = None
    #: Size the compiled-network cache is pruned to.
    engine_cache_max_mb: int = Field(default=4096, ge=64, le=10**8)
    #: Tile edge in input pixels; 0 sizes tiles per network from the memory
    #: budget below (docs/models.md, "Tiling").
    engine_tile_size: int = Field(default=0, ge=0, le=16384)
    #: Memory one network call may use when tiles are sized automatically.
    engine_tile_memory_mb: int = Field(default=3072, ge=64, le=10**7)
    #: PNG zlib level (0-9): 2 with the "up" filter is 2-3x faster than 6 and
    #: smaller on upscaled photos (bench/README.md).
    png_compression: int = Field(default=2, ge=0, le=9)
    #: Quality of jpg and webp results (the spec has no quality field).
    jpeg_quality: int = Field(default=92, ge=1, le=100)
    webp_quality: int = Field(default=90, ge=1, le=100)
    #: libwebp effort (0-6): 2 is 2.5-2.6x faster than libvips's 4 for a file
    #: 2-3 % larger (bench/README.md, "WebP and JPEG encoder settings").
    webp_effort: int = Field(default=2, ge=0, le=6)
    #: Optimal JPEG Huffman tables: same pixels, 2 % smaller, 2-4.6x the
    #: encode time (measured, as above); off by default.
    jpeg_optimize_coding: bool = False
    #: JPEG chroma subsampling: ``auto`` is 4:4:4 at quality >= 90 and 4:2:0
    #: below; ``on`` always 4:2:0 (28 % smaller at 92); ``off`` never.
    jpeg_subsample: Literal["auto", "on", "off"] = "auto"
    #: Face model to use for ``enhanceFace`` (``upscayl-cloud models list``);
    #: empty: the first installed, by name.
    face_model: str = ""
    #: A claimed task whose lease is not renewed within this time is taken
    #: over by another worker. Progress writes renew it.
    lease_seconds: float = Field(default=60.0, gt=0, le=DAY, allow_inf_nan=False)
    #: A task is tried at most this many times (worker deaths included).
    max_attempts: int = Field(default=3, ge=1, le=100)
    #: A task whose engine shows no sign of life for this long (no tile
    #: done, no check for cancellation: a wedged GPU driver or runtime) stops
    #: having its lease renewed, so that it is taken over or, on its last
    #: attempt, failed and refunded; 0: never.
    task_stall_seconds: float = Field(default=1800.0, ge=0, le=DAY, allow_inf_nan=False)
    #: How often an idle worker looks for work.
    poll_interval_seconds: float = Field(default=0.5, gt=0, le=HOUR, allow_inf_nan=False)
    #: Port on which an ``upscayl-cloud worker`` process serves its own
    #: Prometheus metrics (the files it processed); 0: none. A worker has no
    #: other port, and what it measures is in no API process's /metrics.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Interface for that port; loopback by default, like ``host``.
    worker_metrics_host: str = "127.0.0.1"

    # -- housekeeping --------------------------------------------------------------
    #: Interval of the sweeper (expired objects) and reaper (lost tasks).
    sweep_interval_seconds: float = Field(default=60.0, gt=0, le=DAY, allow_inf_nan=False)
    #: Create a key and print it on the first start of ``serve``.
    create_first_key: bool = True
    #: ``/readyz`` probes the database and the store at most once per this
    #: many seconds and answers from the last result in between, so that a
    #: probing load balancer (or anyone: the endpoint needs no key) cannot
    #: pile up probes against a slow store.
    readiness_cache_seconds: float = Field(default=2.0, ge=0, le=HOUR, allow_inf_nan=False)
    #: Longest ``/readyz`` waits for the probe; past it, checks not yet
    #: answered count as failing (503) while the probe finishes on its own.
    readiness_timeout_seconds: float = Field(default=5.0, gt=0, le=600, allow_inf_nan=False)

    @field_validator("storage_dir", "engine_cache_dir", mode="before")
    @classmethod
    def _empty_path_is_default(cls, value: object) -> object:
        """``UPSCAYL_STORAGE_DIR=`` means the default, not the current folder."""
        return None if value == "" else value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        """Each entry as a browser sends it in ``Origin`` (lower-case scheme
        and host, no path), so a listed origin can never silently not match."""
        return ",".join(_origin(entry) for entry in value.split(",") if entry.strip())

    @field_validator("face_model")
    @classmethod
    def _face_model_is_a_name(cls, value: str) -> str:
        """A name ``models add`` could have installed (not a path): checked
        at start, not when the first face task fails."""
        from upscayl_cloud.engine.faces.errors import FaceModelError  # light: no onnxruntime
        from upscayl_cloud.engine.faces.registry import check_name

        try:
            return check_name(value) if value else value
        except FaceModelError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("public_url", "s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        """An http(s) URL with a host, or empty; links built on anything else
        would point nowhere. A path is allowed: a proxy's prefix for
        ``public_url``, and a store that serves S3 under one (Supabase's
        ``/storage/v1/s3``) for the endpoints, whose paths must then agree
        (:meth:`_s3_paths_agree`)."""
        value = value.strip().rstrip("/")
        if not value:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a port that is no number)
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must have no query, fragment or user name in it")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_data_dir_is_default(cls, value: object) -> object:
        """``UPSCAYL_DATA_DIR=`` means ``./data``, not the current folder."""
        return Path("./data") if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_one(cls, value: str) -> str:
        """Parsed, and its dialect known, at start: a typo is one line then,
        not a traceback from the first query."""
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            url = make_url(value)
            dialect = url.get_dialect()
        except NoSuchModuleError:  # an ArgumentError too: first
            raise ValueError(
                "unknown kind of database; use sqlite:///path or postgresql+psycopg://..."
            ) from None
        except ArgumentError:
            raise ValueError(
                "not a database URL; write e.g. postgresql+psycopg://user:password@host/db"
            ) from None
        try:  # the driver it names must be installed (psycopg2, mysql...: not ours)
            dialect.import_dbapi()
        except ImportError:
            raise ValueError(
                f"its driver ({dialect.driver}) is not installed; use sqlite:///path or "
                "postgresql+psycopg://..."
            ) from None
        if dialect.name == "sqlite" and _in_memory(url.database, url.query):
            raise ValueError(
                "an in-memory SQLite database exists only inside one connection of one "
                "process, so the server, its workers and the keys command cannot share it; "
                "use a file, sqlite:///path/to/upscayl.db (or leave it empty)"
            )
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        """Each operation named as the spec names it, each limit one ``limits``
        reads: a misspelt operation would otherwise keep the spec's limit
        silently, and a bad limit fail the first request."""
        for operation, limit in value.items():
            if operation not in SPEC_RATE_LIMITS:
                raise ValueError(
                    f"unknown operation {operation!r}; the operations are "
                    + ", ".join(SPEC_RATE_LIMITS)
                )
            if not _is_limit(limit):
                raise ValueError(
                    f'{operation}: {limit!r} is not a limit; write e.g. "5/minute", '
                    '"100 per hour" or both, "100/hour;5/minute": at least 1 request in '
                    "at least 1 unit of time (UPSCAYL_RATE_LIMITS_ENABLED=false turns "
                    "limits off)"
                )
        return value

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _counter_storage_is_one(cls, value: str) -> str:
        """A storage ``limits`` knows, that keeps a moving window, and whose
        URI it can read: a port that is no number, or a sentinel URI without
        its service name, crashed ``serve`` after its banner."""
        from limits.storage import SCHEMES, MovingWindowSupport

        scheme = value.split("://", 1)[0] if "://" in value else ""
        storage = SCHEMES.get(scheme)
        if storage is None or not issubclass(storage, MovingWindowSupport):
            raise ValueError(
                "not a counter storage for moving windows; use memory:// or "
                "redis://host:6379 (also rediss://, redis+sentinel://, redis+cluster://)"
            )
        problem = _counter_storage_problem(value)
        if problem is not None:
            raise ValueError(
                f"{scheme}:// storage that cannot be used: {problem}; write e.g. "
                "redis://[:password@]host:6379[/db] or redis+sentinel://host:26379/service_name"
            )
        return value

    @field_validator("s3_region")
    @classmethod
    def _s3_region_is_one(cls, value: str, info: ValidationInfo) -> str:
        """A region botocore accepts (a host label), checked at start: it
        refused ``eu west 1`` with a traceback on every command. Not empty
        either: botocore takes it, then signs for no region, which a store
        refuses (and builds no AWS endpoint). Only with ``s3``, so that other
        backends never import botocore."""
        if info.data.get("storage_backend") is not StorageBackend.s3:
            return value
        from botocore.exceptions import InvalidRegionError
        from botocore.utils import validate_region_name

        try:
            validate_region_name(value)
            accepted = bool(value)
        except InvalidRegionError:
            accepted = False
        if not accepted:
            raise ValueError(
                "not an S3 region; write its name, such as us-east-1 or eu-west-1 "
                "(letters, digits and dashes; SeaweedFS and MinIO accept us-east-1)"
            )
        return value

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> Settings:
        if self.storage_backend is StorageBackend.s3 and not self.s3_bucket:
            raise ValueError("UPSCAYL_S3_BUCKET is required when UPSCAYL_STORAGE_BACKEND=s3")
        return self

    @model_validator(mode="after")
    def _s3_keys_come_in_pairs(self) -> Settings:
        """A key id without its secret (or the reverse) is neither a credential
        nor boto3's usual chain: botocore refused it with a traceback."""
        given_id = bool(self.s3_access_key_id)
        given_secret = bool(self.s3_secret_access_key.get_secret_value())
        if self.storage_backend is StorageBackend.s3 and given_id != given_secret:
            raise ValueError(
                "UPSCAYL_S3_ACCESS_KEY_ID and UPSCAYL_S3_SECRET_ACCESS_KEY go together: set "
                "both, or neither to use boto3's usual chain (environment, ~/.aws, role)"
            )
        return self

    @model_validator(mode="after")
    def _s3_paths_agree(self) -> Settings:
        """A public S3 endpoint's path is the store's own. SigV4 signs the
        request's path, and links are signed for the public endpoint: one
        with a prefix the store does not have (``https://cdn.example.com/s3``
        in front of ``http://10.0.0.5:8333``, a proxy stripping ``/s3``)
        made every signed link fail with 403 SignatureDoesNotMatch. Only with
        ``s3``: a leftover public endpoint on a local install links nothing."""
        if self.storage_backend is not StorageBackend.s3 or not self.s3_public_endpoint_url:
            return self
        public = urlsplit(self.s3_public_endpoint_url).path
        internal = urlsplit(self.s3_endpoint_url).path if self.s3_endpoint_url else ""
        if public != internal:
            raise ValueError(
                f"UPSCAYL_S3_PUBLIC_ENDPOINT_URL's path ({public or 'none'}) must be "
                f"UPSCAYL_S3_ENDPOINT_URL's ({internal or 'none'}): S3 signatures cover the "
                "path, so a proxy that strips or adds a prefix breaks every signed link (403 "
                "SignatureDoesNotMatch); give the store a host name or port of its own, "
                "e.g. https://s3.example.org"
            )
        return self

    @model_validator(mode="after")
    def _pending_cap_fits_a_file(self) -> Settings:
        """A cap below one file would refuse files of allowed size forever."""
        if 0 < self.max_pending_upload_bytes < self.max_upload_bytes:
            raise ValueError(
                "UPSCAYL_MAX_PENDING_UPLOAD_BYTES must be at least UPSCAYL_MAX_UPLOAD_BYTES"
            )
        return self

    # -- derived -------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'upscayl.db').resolve()}"

    @property
    def pending_upload_cap(self) -> int:
        """``max_pending_upload_bytes``, or two full batches when it is 0."""
        return self.max_pending_upload_bytes or (
            2 * self.max_files_per_task * self.max_upload_bytes
        )

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "objects").resolve()

    @property
    def resolved_engine_cache_dir(self) -> Path:
        return (self.engine_cache_dir or self.data_dir / "cache").resolve()

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin for origin in self.cors_origins.split(",") if origin]

    def rate_limit_for(self, operation: str) -> str:
        return self.rate_limits.get(operation, SPEC_RATE_LIMITS[operation])

    def signing_secrets(self) -> list[bytes]:
        """The HMAC secrets, newest first; creates a persistent one if none is set.

        A secret generated per process would invalidate every stored key and
        link on restart, so the default one lives in the data directory. It
        appears there whole or not at all (written to a file of its own,
        then linked to its name): a process starting beside the one that
        created it read it while still empty, and signed with an empty
        secret. An empty or unreadable one stops the start
        (:class:`SecretFileError`). It is read once per process, and a file
        deleted under a running process (its data folder too) is written
        back as it was: processes started afterwards, a worker, ``keys
        create``, a restart, then share it instead of creating another.
        """
        given = [s.strip() for s in self.secret_keys.split(",") if s.strip()]
        if given:
            return [s.encode() for s in given]
        path = self.data_dir / "secret.key"
        with _secret_files_lock:
            secret = _secret_files.get(path.resolve())
            if secret is None:
                secret = _secret_files[path.resolve()] = _read_secret_file(path)
            elif not path.exists():
                with contextlib.suppress(OSError):  # a folder gone for good: signed all the same
                    _create_whole(path, secret.decode())
        return [secret]


#: Each data folder's signing secret as this process first read (or created)
#: it, by the file's absolute path. Read once: a running server that found
#: the file gone created a new secret, and answered 401 to every key.
_secret_files: dict[Path, bytes] = {}
_secret_files_lock = threading.Lock()


def _read_secret_file(path: Path) -> bytes:
    """The secret in ``path``, created first when there is none."""
    try:
        if not path.exists():
            _create_whole(path, secrets.token_urlsafe(48))
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SecretFileError(f"Cannot read the signing secret {path}: {why}") from None
    if not secret:
        raise SecretFileError(
            f"The signing secret {path} is empty: restore it from a backup (every API "
            "key and link depends on it), or delete it to start afresh without them"
        )
    return secret.encode()


class SecretFileError(Exception):
    """The data folder's signing secret cannot be used (empty, unreadable)."""


def _create_whole(path: Path, text: str) -> None:
    """``path`` holding ``text``, unless another process created it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won, whole
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()

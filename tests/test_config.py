from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from pydantic import ValidationError

from upscayl_cloud import config, worker
from upscayl_cloud.config import SPEC_RATE_LIMITS, SecretFileError, Settings, _read_secret_file
from upscayl_cloud.engine.options import EncodeSettings
from upscayl_cloud.services.context import Context


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None)
    assert settings.data_dir == Path("./data")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'upscayl.db'}"
    assert settings.resolved_storage_dir == tmp_path / "data" / "objects"
    assert settings.rate_limit_for("start-task") == SPEC_RATE_LIMITS["start-task"] == "50/hour"
    assert settings.credits_per_image == 1


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("UPSCAYL_WORKERS", "3")
    monkeypatch.setenv("UPSCAYL_RATE_LIMITS", '{"start-task": "5/minute"}')
    settings = Settings(_env_file=None)
    assert settings.data_dir == tmp_path / "d"
    assert settings.workers == 3
    assert settings.rate_limit_for("start-task") == "5/minute"
    assert settings.rate_limit_for("get-task-status") == "100/hour"


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, workers=-1)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, multipart_part_bytes=1024)


def test_encoder_settings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("-1", "7"):
        monkeypatch.setenv("UPSCAYL_WEBP_EFFORT", bad)
        with pytest.raises(ValidationError, match="webp_effort"):
            Settings(_env_file=None)
    monkeypatch.setenv("UPSCAYL_WEBP_EFFORT", "6")
    monkeypatch.setenv("UPSCAYL_JPEG_SUBSAMPLE", "4:2:2")
    with pytest.raises(ValidationError, match="jpeg_subsample"):
        Settings(_env_file=None)


def test_encoder_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = worker.engine_settings(Settings(_env_file=None, data_dir=tmp_path))
    # The measured defaults (bench/README.md) are the engine's own.
    assert defaults.encode == EncodeSettings()
    assert (defaults.encode.webp_effort, defaults.encode.jpeg_optimize_coding) == (2, False)
    monkeypatch.setenv("UPSCAYL_WEBP_EFFORT", "6")
    monkeypatch.setenv("UPSCAYL_JPEG_OPTIMIZE_CODING", "true")
    monkeypatch.setenv("UPSCAYL_JPEG_SUBSAMPLE", "on")
    monkeypatch.setenv("UPSCAYL_PNG_COMPRESSION", "6")
    encode = worker.engine_settings(Settings(_env_file=None, data_dir=tmp_path)).encode
    assert (encode.webp_effort, encode.jpeg_optimize_coding, encode.jpeg_subsample) == (
        6,
        True,
        "on",
    )
    assert encode.png_compression == 6


def context(settings: Settings) -> Context:
    """What ``engine_settings`` reads of a context: its settings."""
    return cast(Context, SimpleNamespace(settings=settings))


def test_generated_secret_persists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Settings(_env_file=None, data_dir=tmp_path).signing_secrets()
    monkeypatch.setattr(config, "_secret_files", {})  # as a new process finds it
    second = Settings(_env_file=None, data_dir=tmp_path).signing_secrets()
    assert first == second and len(first[0]) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_a_generated_secret_is_never_seen_empty(tmp_path: Path) -> None:
    """Processes starting together on a fresh data folder: one read the file
    the other had created but not yet written, and signed with b"" (2 in 40
    tries). Each sees the same whole secret now; no temporary file stays.
    (Threads stand in for the processes, reading the file as each process
    does once: a process's own threads share what it read.)"""
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(20):
        folder = tmp_path / str(attempt)
        with ThreadPoolExecutor(max_workers=4) as pool:
            got = list(pool.map(config._read_secret_file, [folder / "secret.key"] * 4))
        assert all(secret == got[0] and len(secret) >= 32 for secret in got)
        assert [p.name for p in folder.iterdir()] == ["secret.key"]


def test_the_secret_is_read_once_and_never_made_anew(tmp_path: Path) -> None:
    """A running server whose ``secret.key`` disappeared made a new one at
    the next request, and answered 401 to every key from then on."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    first = settings.signing_secrets()
    (tmp_path / "secret.key").unlink()
    assert settings.signing_secrets() == first
    assert Settings(_env_file=None, data_dir=tmp_path).signing_secrets() == first
    assert settings.model_copy(update={"workers": 2}).signing_secrets() == first


def test_a_secret_file_deleted_under_a_running_process_is_written_back(tmp_path: Path) -> None:
    """Kept only in memory, the next process on the folder (a worker, keys
    create, a restart) made a secret of its own: refused at start, or every
    key it made answered 401 here. The data folder itself gone too."""
    data = tmp_path / "data"
    settings = Settings(_env_file=None, data_dir=data)
    first = settings.signing_secrets()
    shutil.rmtree(data)
    data.mkdir()
    assert settings.signing_secrets() == first
    assert (data / "secret.key").read_bytes() == first[0]
    assert _read_secret_file(data / "secret.key") == first[0]  # what another process reads


def test_an_empty_secret_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("\n")
    with pytest.raises(SecretFileError, match="is empty"):
        Settings(_env_file=None, data_dir=tmp_path).signing_secrets()


def test_secret_rotation_list(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, secret_keys="new, old")
    assert settings.signing_secrets() == [b"new", b"old"]


@pytest.mark.parametrize(
    ("given", "origins"),
    [
        ("", []),
        (" https://App.Example.org/ ", ["https://app.example.org"]),
        ("http://localhost:8080,https://a.org:443", ["http://localhost:8080", "https://a.org"]),
        ("http://[::1]:9000", ["http://[::1]:9000"]),
        ("http://[0:0:0:0:0:0:0:1]", ["http://[::1]"]),
        ("https://bücher.example", ["https://xn--bcher-kva.example"]),
        # UTS 46 as browsers apply it, not IDNA 2003's strasse.de, fass.de:
        ("https://straße.de,https://Faß.de", ["https://xn--strae-oqa.de", "https://xn--fa-hia.de"]),
        ("https://ελληνικός.gr", ["https://xn--qxaegecap6byf.gr"]),
        ("http://my_box.lan:5173", ["http://my_box.lan:5173"]),  # browsers allow _
        ("*", ["*"]),
    ],
)
def test_cors_origins_are_spelt_as_browsers_send_them(given: str, origins: list[str]) -> None:
    """A browser's ``Origin`` is lower-case, without path or default port; an
    entry written otherwise must still match it."""
    assert Settings(_env_file=None, cors_origins=given).cors_origin_list == origins


@pytest.mark.parametrize(
    "given",
    [
        "app.example.org",
        "https://a.org/app",
        "ftp://a.org",
        "http://a.org:99999",
        "http://a.org:0",
        "http://u@a.org",
        "http://127.1",
        "http://a\u200db.example",  # a joiner IDNA 2003 silently dropped
        "http://a b.org",
        "https://a.org?",
        "https://a.org:",
        "http://[::1",
    ],
)
def test_cors_origins_that_are_not_origins_are_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins") as caught:
        Settings(_env_file=None, cors_origins=given)
    assert repr(given) in str(caught.value)


def test_a_face_model_setting_must_be_a_model_name() -> None:
    """Checked at start: a path here could only fail every face task later."""
    assert Settings(_env_file=None, face_model="gfpgan-1.4").face_model == "gfpgan-1.4"
    assert Settings(_env_file=None, face_model="gfpgan-1.4.onnx").face_model == "gfpgan-1.4"
    with pytest.raises(ValidationError, match="face_model") as caught:
        Settings(_env_file=None, face_model="../GFPGANv1.4.onnx")
    assert "must be 1-64 letters" in str(caught.value)


def test_s3_backend_needs_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCAYL_STORAGE_BACKEND", "s3")
    with pytest.raises(ValidationError, match="UPSCAYL_S3_BUCKET"):
        Settings(_env_file=None)
    monkeypatch.setenv("UPSCAYL_S3_BUCKET", "b")
    monkeypatch.setenv("UPSCAYL_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("UPSCAYL_S3_SECRET_ACCESS_KEY", "hidden")
    monkeypatch.setenv("UPSCAYL_S3_ENDPOINT_URL", "http://10.0.0.5:8333/")
    settings = Settings(_env_file=None)
    assert (settings.s3_bucket, settings.s3_endpoint_url) == ("b", "http://10.0.0.5:8333")
    assert settings.s3_addressing_style == "path" and settings.s3_region == "us-east-1"
    assert "hidden" not in repr(settings)


def test_empty_folder_settings_mean_their_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``UPSCAYL_STORAGE_DIR=`` (as a compose file writes an unset variable)
    must not put objects in the current folder."""
    monkeypatch.setenv("UPSCAYL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UPSCAYL_STORAGE_DIR", "")
    monkeypatch.setenv("UPSCAYL_ENGINE_CACHE_DIR", "")
    settings = Settings(_env_file=None)
    assert settings.resolved_storage_dir == tmp_path / "objects"
    assert settings.resolved_engine_cache_dir == tmp_path / "cache"


def test_engine_backend_is_one_of_the_known_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSCAYL_ENGINE_BACKEND", "openvino")
    monkeypatch.setenv("UPSCAYL_ENGINE_PRECISION", "fp32")
    settings = Settings(_env_file=None)
    assert (settings.engine_backend, settings.engine_precision) == ("openvino", "fp32")
    with pytest.raises(ValidationError, match="engine_backend"):
        Settings(_env_file=None, engine_backend="tensorflow")


@pytest.mark.parametrize(
    "limit", ["100/hour;1/minute", "5/second, 100/hour", "10 per 2 minutes|1000/day"]
)
def test_several_limits_for_one_operation_are_read(limit: str) -> None:
    settings = Settings(_env_file=None, rate_limits={"start-task": limit})
    assert settings.rate_limit_for("start-task") == limit


@pytest.mark.parametrize(
    "limit", ["5 per 0 minute", "5/0 hours", "100/hour;5 per 00 second", "0/minute", "5/minute;"]
)
def test_a_limit_with_nothing_in_it_is_refused(limit: str) -> None:
    """``limits`` reads a period of 0 minutes as 1 minute, silently."""
    with pytest.raises(ValidationError, match="is not a limit"):
        Settings(_env_file=None, rate_limits={"start-task": limit})


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("redis://:s3cret-pw@localhost:notaport", "'notaport'"),
        ("redis://localhost:99999", "Port out of range"),
        ("redis+sentinel://:s3cret-pw@localhost:26379", "'service_name' not provided"),
        ("redis+sentinel://localhost/mymaster", "Missing host or port"),
        ("redis+cluster://:s3cret-pw@localhost:x", "'x'"),
        ("redis+cluster://localhost", "Missing host or port"),
        ("redis://localhost:6379/0?socket_timeout=soon", "socket_timeout"),
        # limits drops these queries: read here, as redis-py reads a redis:// one.
        (
            "redis+sentinel://:s3cret-pw@h:26379/mymaster?socket_timeout=soon",
            "invalid value for 'socket_timeout' in its query",
        ),
        ("redis+cluster://h:7000?socket_connect_timeout=x", "'socket_connect_timeout'"),
    ],
)
def test_a_counter_storage_limits_cannot_read_is_refused(uri: str, says: str) -> None:
    """These passed (the scheme was all that was checked), and ``serve``
    crashed after its banner; the password is never repeated."""
    with pytest.raises(ValidationError, match="rate_limit_storage_uri") as caught:
        Settings(_env_file=None, rate_limit_storage_uri=uri)
    message = caught.value.errors()[0]["msg"]
    assert says in message
    assert "s3cret-pw" not in message


def test_a_short_password_read_as_an_address_is_never_quoted() -> None:
    """Pieces under three characters were left in ("... as 'pw'"): too
    short to blot out, so the reason goes whole."""
    with pytest.raises(ValidationError, match="rate_limit_storage_uri") as caught:
        Settings(_env_file=None, rate_limit_storage_uri="redis://:pw/x@host:6379")
    message = caught.value.errors()[0]["msg"]
    assert "'pw'" not in message and "percent-encode" in message


@pytest.mark.parametrize(
    "uri",
    [
        "memory://",
        "redis://localhost:6379",
        "redis://:pw@10.0.0.5:6379/2",
        "rediss://localhost",
        "redis+unix:///run/redis.sock",
        "redis+sentinel://:pw@h1:26379,h2:26379/mymaster",
        "redis+cluster://h1:7000,h2:7001",
        "redis+sentinel://h1:26379/mymaster?socket_timeout=0.5&socket_connect_timeout=0.5",
    ],
)
def test_counter_storages_limits_can_read_are_taken_without_connecting(uri: str) -> None:
    """Nothing listens at these: reading them must not connect."""
    assert Settings(_env_file=None, rate_limit_storage_uri=uri).rate_limit_storage_uri == uri


@pytest.mark.parametrize("region", ["eu west 1", "eu-west-1.", "-eu", ""])
def test_an_s3_region_botocore_refuses_is_refused(region: str) -> None:
    """It was a traceback of 150 lines from every command."""
    with pytest.raises(ValidationError, match="s3_region") as caught:
        Settings(_env_file=None, storage_backend="s3", s3_bucket="b", s3_region=region)
    assert "not an S3 region" in str(caught.value)
    other = Settings(_env_file=None, storage_backend="s3", s3_bucket="b", s3_region="eu-west-1")
    assert other.s3_region == "eu-west-1"


def test_s3_keys_are_both_given_or_neither() -> None:
    s3 = {"_env_file": None, "storage_backend": "s3", "s3_bucket": "b"}
    for half in ({"s3_access_key_id": "id"}, {"s3_secret_access_key": "secret"}):
        with pytest.raises(ValidationError, match="go together"):
            Settings(**s3, **half)  # type: ignore[arg-type]
    Settings(**s3)  # type: ignore[arg-type]
    Settings(**s3, s3_access_key_id="id", s3_secret_access_key="secret")  # type: ignore[arg-type]
    Settings(_env_file=None, s3_access_key_id="id")  # another backend uses neither


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite+pysqlite:///:memory:",
        "sqlite:///file::memory:?uri=true",
        "sqlite:///file:db?mode=memory&uri=true",
    ],
)
def test_an_in_memory_sqlite_database_is_refused(url: str) -> None:
    """It passed, then crashed the start (pool arguments); and no other
    process could ever see it."""
    with pytest.raises(ValidationError, match="in-memory SQLite database") as caught:
        Settings(_env_file=None, database_url=url)
    assert "cannot share it" in str(caught.value)


def test_a_sqlite_file_url_is_taken(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/upscayl.db"
    assert Settings(_env_file=None, database_url=url).resolved_database_url == url


def test_a_sentinel_or_cluster_uri_query_becomes_connection_options() -> None:
    """``limits`` builds their clients from the host list alone; a
    Sentinel's own connections take the ``socket_*`` options too."""
    sentinel = "redis+sentinel://h1:26379/mymaster?socket_timeout=0.5&client_name=rl"
    assert config.counter_storage_options(sentinel) == {
        "socket_timeout": 0.5,
        "client_name": "rl",
        "sentinel_kwargs": {"socket_timeout": 0.5},
    }
    cluster = "redis+cluster://h1:7000?socket_connect_timeout=1&max_connections=8"
    assert config.counter_storage_options(cluster) == {
        "socket_connect_timeout": 1.0,
        "max_connections": 8,
    }
    # redis-py reads a redis:// query itself; memory:// has none.
    assert config.counter_storage_options("redis://h:6379?socket_timeout=0.5") == {}
    assert config.counter_storage_options("memory://") == {}


def test_a_public_s3_endpoint_with_a_prefix_the_store_lacks_is_refused() -> None:
    """SigV4 signs the path: behind a proxy that strips ``/s3`` every signed
    link was refused (403 SignatureDoesNotMatch), and the start said nothing."""
    with pytest.raises(ValidationError) as caught:
        Settings(
            _env_file=None,
            storage_backend="s3",
            s3_bucket="photos",
            s3_endpoint_url="http://10.0.0.5:8333",
            s3_public_endpoint_url="https://cdn.example.com/s3/",
        )
    message = caught.value.errors()[0]["msg"]
    assert "path (/s3) must be UPSCAYL_S3_ENDPOINT_URL's (none)" in message
    assert "SignatureDoesNotMatch" in message
    taken = Settings(_env_file=None, s3_public_endpoint_url="https://s3.example.com:8443/")
    assert taken.s3_public_endpoint_url == "https://s3.example.com:8443"


def test_a_local_install_with_a_leftover_public_s3_endpoint_starts() -> None:
    """The endpoints' paths matter to S3 links only: a local store ignores
    both, so an env file kept from an S3 setup must not stop the start."""
    endpoints = {
        "s3_endpoint_url": "http://10.0.0.5:8333",
        "s3_public_endpoint_url": "https://cdn.example.com/s3",
    }
    local = Settings(_env_file=None, storage_backend="local", **endpoints)
    assert local.s3_public_endpoint_url == "https://cdn.example.com/s3"
    with pytest.raises(ValidationError, match="path"):  # the same endpoints with s3 stop it
        Settings(_env_file=None, storage_backend="s3", s3_bucket="b", **endpoints)


def test_a_store_that_serves_s3_under_a_path_is_taken() -> None:
    """Supabase serves S3 at ``/storage/v1/s3``: botocore signs that path, so
    links work, with a public endpoint of the same path or none."""
    endpoint = "https://proj.supabase.co/storage/v1/s3"
    alone = Settings(_env_file=None, s3_endpoint_url=endpoint + "/")
    assert alone.s3_endpoint_url == endpoint
    both = Settings(
        _env_file=None,
        s3_endpoint_url=endpoint,
        s3_public_endpoint_url="https://files.example.org/storage/v1/s3",
    )
    assert both.s3_public_endpoint_url == "https://files.example.org/storage/v1/s3"


def test_the_public_url_keeps_its_prefix() -> None:
    """The API's own links are checked by the API, behind the proxy's prefix."""
    settings = Settings(_env_file=None, public_url="https://up.example.org/pre/")
    assert settings.public_url == "https://up.example.org/pre"

"""``upscayl-cloud serve``: the whole embedded stack in one process;
``upscayl-cloud worker``: workers alone, beside one or more ``serve --workers 0``.

Zero configuration: the data directory, database (migrated), storage folder
and workers are set up on start. On the very first start a key is created
and printed once, with the URL to use it against. The task table is the
queue, so any number of ``worker`` processes can share a database (and a
storage) with the API; a killed one loses nothing (its leases expire).
"""

from __future__ import annotations

import errno
import logging
import socket
from socketserver import BaseServer
from typing import TYPE_CHECKING, Annotated

import typer

from upscayl_cloud.api.redact import EscapeControls
from upscayl_cloud.api.requestid import RequestIdFilter
from upscayl_cloud.cli.startup import (
    exit_if_database_failed,
    missing_embedded_database,
    open_context,
    prepare_folder,
)
from upscayl_cloud.config import MAX_THREADS, Settings, get_settings
from upscayl_cloud.services import keys

if TYPE_CHECKING:
    from upscayl_cloud.services.metrics import Metrics

#: Longest wait for requests in flight when ``serve`` is asked to stop.
DRAIN_SECONDS = 30


def first_start_key(settings: Settings) -> str | None:
    """Create a key if none exists yet; returns it (shown once) or None."""
    ctx = open_context(settings, records_secret=True)
    try:
        if not settings.create_first_key or keys.count_keys(ctx) > 0:
            return None
        key, _info = keys.create_key(ctx, "first key", settings.first_key_credits)
        return key
    finally:
        ctx.db.dispose()


def raise_descriptor_limit() -> int:
    """Lift this process's open-file limit to the most it is allowed; returns it.

    Each connection holds a descriptor, and the usual soft limit (1024) is
    reached long before the CPU is busy: past it, new connections wait in the
    listen queue and asyncio logs a refused accept every second. The hard
    limit is what the administrator granted (``LimitNOFILE``), so take it all,
    as nginx's ``worker_rlimit_nofile`` does.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a sandbox may refuse; the old limit still works
            pass
    return soft


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: UPSCAYL_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="TCP port to listen on (default: UPSCAYL_PORT, 8000).", min=0, max=65535),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Worker threads (0: API only; default: UPSCAYL_WORKERS).",
            min=0,
            max=MAX_THREADS,
        ),
    ] = None,
) -> None:
    """Run the API, its workers and the retention sweeper."""
    import uvicorn

    from upscayl_cloud.api.app import create_app
    from upscayl_cloud.api.protocol import DeadlineH11Protocol
    from upscayl_cloud.api.ratelimit import check_counter_storage

    overrides = {
        name: value
        for name, value in (("host", host), ("port", port), ("workers", workers))
        if value is not None
    }
    settings = get_settings().model_copy(update=overrides)
    if settings.port == 0 and (chosen := free_port(settings.host)) is not None:
        # "Any free port": the banner and a first start's key name the one taken.
        settings = settings.model_copy(update={"port": chosen})
    taken = listen_problem(settings.host, settings.port)
    if taken is not None:  # before a first start's key, and before the banner
        typer.echo(taken, err=True)
        raise typer.Exit(1)
    configure_logging()
    logging.getLogger(__name__).info(
        "open-file limit: %d (each connection holds one)", raise_descriptor_limit()
    )
    # Before a first start's key too: a wrong Redis password or a read-only
    # replica turned the limits off for good, with a log line per request.
    counters = check_counter_storage(settings)
    if counters is not None and counters.fatal:
        typer.echo(counters.message, err=True)
        raise typer.Exit(1)
    if counters is not None:  # out of reach: its outages are let through anyway
        logging.getLogger(__name__).warning("%s", counters.message)
    url = settings.public_url or f"http://{url_host(settings.host)}:{settings.port}"
    key = first_start_key(settings)
    if key is not None:
        typer.echo(f"First start: created an API key with {settings.first_key_credits} credits.")
        typer.echo("It is shown only this once; keep it somewhere safe:")
        typer.echo(f"  X-API-Key: {key}")
        typer.echo(f"  API: {url}")
    local = f"http://{url_host(settings.host)}:{settings.port}"
    # Behind a proxy, the public URL says nothing of the port taken here
    # (--port 0 above all): the address listened on is named too.
    listening = f", listening on {local}" if url != local else ""
    typer.echo(
        f"Serving the Upscayl Cloud API on {url} (data: {settings.data_dir.resolve()}{listening})"
    )
    typer.echo(f"Web page: {url}/ (paste the key there)")
    # SIGTERM: uvicorn stops accepting connections, lets requests in flight
    # finish (at most DRAIN_SECONDS), then the lifespan stops the workers,
    # which hand their tasks back to the queue.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        # uvicorn's own lines (its access log above all) through our handler:
        # its default config wrote them to stdout, without time or request id.
        log_config=None,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        # Slow headers close the connection, slow bodies get 408 (see protocol.py).
        http=DeadlineH11Protocol.for_origins(settings.cors_origin_list),
    )


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets
    (``http://[::1]:8000``; ``http://::1:8000`` opens nothing)."""
    return f"[{host}]" if ":" in host else host


def free_port(host: str) -> int | None:
    """A port free on ``host`` now, for ``--port 0``: uvicorn would bind an
    ephemeral port itself, but only after the banner and a first start's key
    had named port 0, and on each of the host's addresses a different one.
    None when nothing binds (``listen_problem`` then says why). The port may
    be taken between this and uvicorn's bind: then uvicorn says so."""
    try:
        found = socket.getaddrinfo(
            host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return None
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)
                return int(probe.getsockname()[1])
        except OSError:
            continue
    return None


def listen_problem(host: str, port: int) -> str | None:
    """Why ``serve`` could not listen on ``host:port``, or None. A second
    ``make serve`` printed its banner and "startup complete" before uvicorn's
    "address already in use"; this says so first, and what to do.

    The probe binds as asyncio's ``create_server`` (under uvicorn) does: every
    address the host resolves to ("" is every interface), IPv6 sockets
    IPv6-only (so an IPv4 server on the port is no clash), addresses this
    machine does not have skipped. The port may still be taken between this
    check and uvicorn's bind: then uvicorn says so, as before."""
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return f"Cannot listen on {host}:{port}: {exc.strerror or exc}"
    missing: OSError | None = None
    bound = False
    for family, kind, proto, _, address in dict.fromkeys(found):
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this machine lacks: asyncio skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    missing = exc
                    continue
                hint = ""
                if exc.errno == errno.EADDRINUSE:
                    hint = " (another server running?); --port or UPSCAYL_PORT picks another port"
                return f"Cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
            bound = True
    if missing is not None and not bound:  # every address skipped: nothing to listen on
        return (
            f"Cannot listen on {host}:{port}: {missing.strerror} (this machine has no such "
            "address; --host or UPSCAYL_HOST names one of its own, 0.0.0.0 every one)"
        )
    return None


def configure_logging() -> None:
    """Info-level logs for the service; libvips's own info messages (one or
    more per image: which loader, the work files' paths) only from warnings
    up, or they bury the service's lines."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
        handler.addFilter(EscapeControls())
    logging.getLogger("pyvips").setLevel(logging.WARNING)


def worker(
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker threads in this process.", min=1, max=MAX_THREADS),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this process's Prometheus metrics on this port (0: none).",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Process tasks from the shared database until interrupted (Ctrl-C, SIGTERM)."""
    import signal
    import threading

    from upscayl_cloud.services.metrics import Metrics
    from upscayl_cloud.services.sweeper import Sweeper
    from upscayl_cloud.worker import WorkerPool

    overrides = {
        name: value
        for name, value in (("workers", workers), ("worker_metrics_port", metrics_port))
        if value is not None
    }
    settings = get_settings().model_copy(update=overrides)
    configure_logging()
    missing = missing_embedded_database(settings)
    prepare_folder(settings)  # a data folder it cannot use is said first, alone
    if missing is not None:
        # Started before the server is fine (they share the file it creates);
        # started in another folder than the server's, it waits for nothing.
        chooser = "UPSCAYL_DATABASE_URL" if settings.database_url else "UPSCAYL_DATA_DIR"
        typer.echo(
            f"note: no database at {missing} yet, so a new one is created: a worker "
            "serves the server whose database it shares (run it in the folder the "
            f"server runs in, or set {chooser} as the server has it)",
            err=True,
        )
    ctx = open_context(settings, records_secret=True)
    count = max(1, settings.workers)
    metrics = Metrics(ctx, task_counts=False)
    exporter = serve_worker_metrics(settings, metrics)
    pool = WorkerPool(ctx, count, metrics)
    sweeper = Sweeper(ctx)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    sweeper.start()
    pool.start()
    typer.echo(f"Worker running with {count} thread(s) (data: {settings.data_dir.resolve()})")
    done.wait()
    typer.echo("Stopping: finishing or handing back tasks in progress (up to 30 s)")
    pool.stop(timeout=30)
    sweeper.stop()
    if exporter is not None:
        exporter.shutdown()
        exporter.server_close()
    ctx.db.dispose()


def serve_worker_metrics(settings: Settings, metrics: Metrics) -> BaseServer | None:
    """Serve a worker process's own metrics (``UPSCAYL_WORKER_METRICS_PORT``)
    on a thread of prometheus-client's: its processing times are observed
    here, and no API process sees them. Exits with a clear line when the
    port cannot be had, before any task is claimed."""
    if not settings.worker_metrics_port:
        return None
    from prometheus_client import start_http_server

    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        typer.echo(f"Cannot serve worker metrics on {host}:{port}: {exc.strerror}", err=True)
        # Like serve's own port taken: a setting that cannot be used at start.
        raise typer.Exit(1) from None
    typer.echo(f"Worker metrics on http://{host}:{port}/metrics")
    return server


def migrate() -> None:
    """Upgrade the database schema now (every process also does it on start,
    under a lock; this is for upgrading ahead of a rollout)."""
    from upscayl_cloud.db.engine import make_engine
    from upscayl_cloud.db.migrate import head_revision, upgrade

    settings = get_settings()
    prepare_folder(settings)
    engine = make_engine(settings.resolved_database_url)
    try:
        before, after = upgrade(engine)
    except Exception as exc:
        exit_if_database_failed(settings, exc)
        raise
    finally:
        engine.dispose()
    if before is None:
        typer.echo(f"Database schema created (revision {after})")
    elif before != after:
        typer.echo(f"Database schema upgraded from revision {before} to {after}")
    elif after != head_revision():
        typer.echo(
            f"Database schema is at revision {after}, newer than this release's "
            f"{head_revision()}: left as it is"
        )
    else:
        typer.echo(f"Database schema is up to date (revision {after})")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("migrate")(migrate)

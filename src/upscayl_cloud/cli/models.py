"""``upscayl-cloud models list|backends|tune|add|remove``: what this server
can run, and how fast.

Upscaling models ship with the package (the catalog); face-restoration
models are installed by the operator, because none can be redistributed
with it or fetched at run time. ``add`` checks a model against the contract
(1x3x512x512 float RGB in [-1, 1], same out) by loading and running it
before copying it into ``$UPSCAYL_DATA_DIR/models/faces``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from upscayl_cloud.cli.help import FLAG, HELP_MARKUP
from upscayl_cloud.cli.startup import missing_embedded_database
from upscayl_cloud.config import get_settings
from upscayl_cloud.engine.catalog import DEFAULT_MODEL, MODELS

models_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help="List upscaling models; install face-restoration models.",
    no_args_is_help=True,
)


def _faces_dir() -> Path:
    # Imported here: onnxruntime takes a while to load, and no other command needs it.
    from upscayl_cloud.engine import faces

    return faces.models_dir(get_settings().data_dir)


def capabilities(faces_dir: Path) -> dict[str, object]:
    """What ``models list --json`` prints (and what a capabilities endpoint
    could serve): upscaling models, face models, face enhancement on or off."""
    from upscayl_cloud.engine import faces

    installed = faces.available(faces_dir)
    chosen = faces.selected(faces_dir, get_settings().face_model)
    broken = faces.unusable(faces_dir)
    return {
        "models": [
            {"name": m.name, "title": m.title, "scales": sorted(m.plans)} for m in MODELS.values()
        ],
        "defaultModel": DEFAULT_MODEL,
        "faceModels": [{"name": m.name, "sizeBytes": m.size_bytes} for m in installed],
        "unusableFaceModels": [{"name": n, "reason": why} for n, why in broken.items()],
        "faceEnhancement": chosen is not None,
        "faceModel": chosen.name if chosen else None,
    }


@models_app.command("list")
def list_models(
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="Machine-readable output.")
    ] = False,
) -> None:
    """Show the upscaling models, the installed face models, and whether
    face enhancement is available."""
    from upscayl_cloud.engine import faces

    directory = _faces_dir()
    info = capabilities(directory)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo("Upscaling models:")
    for model in MODELS.values():
        default = " (default)" if model.name == DEFAULT_MODEL else ""
        scales = "/".join(f"{s}x" for s in sorted(model.plans))
        typer.echo(f"  {model.name:<22} {scales:<9} {model.title}{default}")
    typer.echo(f"Face-restoration models ({directory}):")
    installed = faces.available(directory)
    for face_model in installed:
        typer.echo(f"  {face_model.name:<22} {face_model.size_bytes / 1e6:.1f} MB")
    # Shown, or a file copied in by hand that cannot be used would just vanish.
    broken = faces.unusable(directory)
    for broken_name, why in broken.items():
        typer.echo(f"  {broken_name:<22} unusable: {why}")
    if not installed and not broken:
        typer.echo("  (none)")
    if info["faceModel"]:
        typer.echo(f"Face enhancement: available (uses {info['faceModel']})")
    else:
        reason = faces.unavailable_reason(directory, get_settings().face_model)
        typer.echo(f"Face enhancement: unavailable: {reason}")


@models_app.command("backends")
def backends(
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="Machine-readable output.")
    ] = False,
) -> None:
    """Show each inference backend, what it would run on here, and which one
    the configured ``UPSCAYL_ENGINE_BACKEND`` selects (and why)."""
    from upscayl_cloud.engine.backends.select import BackendUnavailableError, report, resolve
    from upscayl_cloud.worker import threads_per_worker

    settings = get_settings()
    threads = threads_per_worker(settings)
    try:
        choice = resolve(settings.engine_backend, settings.engine_use_gpu)
        selected, reason, provider = choice.backend, choice.reason, choice.provider
    except BackendUnavailableError as exc:
        choice, selected, reason, provider = None, None, str(exc), None
    rows = report(
        threads, settings.engine_use_gpu, streams=max(1, settings.workers), selected=choice
    )
    if as_json:
        info = {
            "configured": settings.engine_backend,
            "precision": settings.engine_precision,
            "selected": selected,
            "provider": provider,
            "reason": reason,
            "backends": [
                {"name": r.backend, "available": r.available, "device": r.device} for r in rows
            ],
        }
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo("Inference backends on this machine:")
    for row in rows:
        mark = "  <- selected" if row.backend == selected else ""
        state = "available  " if row.available else "unavailable"
        typer.echo(f"  {row.backend:<12} {state} {row.device}{mark}")
    typer.echo(f"UPSCAYL_ENGINE_BACKEND={settings.engine_backend}: {selected or 'none'} ({reason})")
    typer.echo(f"UPSCAYL_ENGINE_PRECISION={settings.engine_precision}")
    if selected is None:
        raise typer.Exit(1)


@models_app.command("tune")
def tune(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to tune (default: every model).", show_default=False),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="The --workers the workers run with (default: UPSCAYL_WORKERS): "
            "timings hold for one thread count.",
            min=1,
        ),
    ] = None,
) -> None:
    """Time every tile width the selected backend may run slowly, ahead of the
    first task (OpenVINO: about one width in five of some networks).

    Workers otherwise time a width when an image of at least 256 rows first
    needs it (0.1-0.3 s of that task), and shorter images step around only
    the widths timed already. Run it on each machine with the workers'
    settings (the timings are kept per CPU, runtime, precision, threads and
    streams, in the cache folder); an interrupted run resumes. Running
    workers take the new timings in within 10 seconds.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from upscayl_cloud.engine.catalog import get_model
    from upscayl_cloud.engine.errors import UnknownModelError
    from upscayl_cloud.engine.runner import load_network
    from upscayl_cloud.engine.tiling import configured_tile_size
    from upscayl_cloud.engine.tuning import tunable_widths
    from upscayl_cloud.engine.tuning import tune as tune_network
    from upscayl_cloud.worker import engine_settings

    try:
        chosen = [get_model(name) for name in models or MODELS]
    except UnknownModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    keys = list(dict.fromkeys(key for model in chosen for key in model.networks()))
    service = get_settings()
    if workers is not None:
        service = service.model_copy(update={"workers": workers})
    settings = engine_settings(service)
    console = Console()
    networks = [load_network(key, settings) for key in keys]
    tunable = [network for network in networks if network.width_timings is not None]
    if not tunable:
        backend = networks[0].backend
        console.print(
            f"Nothing to tune: only OpenVINO's tiles step around slow widths, not {backend}'s."
        )
        return
    console.print(f"Timing tile widths on {tunable[0].backend} ({tunable[0].device}):")
    for network in tunable:
        key = network.spec.key
        widths = tunable_widths(network, configured_tile_size(network, settings))
        label = TextColumn(f"  {key:<24}")
        columns = (label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        live = console.is_terminal
        with Progress(*columns, console=console, transient=True, disable=not live) as progress:
            bar = progress.add_task(key, total=len(widths))
            result = tune_network(network, widths, lambda *_, bar=bar: progress.advance(bar))
        assert result is not None  # it has width timings
        slow = len(result.slow)
        console.print(
            f"  {key:<24} widths {widths.start}-{widths.stop - 1}: "
            f"{slow} slow ({slow / len(widths):.0%}), {result.seconds:.0f} s"
        )
    console.print(f"Kept under {settings.cache_dir}; running workers take them in within 10 s.")


@models_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="An ONNX face-restoration model.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name to install it as (default: file name).")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", metavar=FLAG, help="Overwrite an installed model of that name."),
    ] = False,
) -> None:
    """Check a face-restoration model (1x3x512x512 RGB in [-1, 1] in and out)
    and install it."""
    from upscayl_cloud.engine import faces

    try:
        model = faces.add(_faces_dir(), path, name, replace=replace)
    except faces.FaceModelError as exc:
        typer.echo(f"error: {exc.public_message}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as exc:  # the faces folder not writable, a full disk
        typer.echo(f"error: {exc.filename or path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"installed face model {model.name!r} ({model.path})")
    settings = get_settings()
    # Only the embedded database says which data folder a server uses: with
    # a database URL, a missing file says nothing of where face models go.
    missing = None if settings.database_url else missing_embedded_database(settings)
    if missing is not None:  # most likely another folder than the server's
        typer.echo(
            f"note: no database at {missing}: a server reads face models from its own "
            "data folder; if it runs elsewhere, add the model there (or set "
            "UPSCAYL_DATA_DIR as the server has it)",
            err=True,
        )


@models_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="An installed face model.")]) -> None:
    """Uninstall a face-restoration model."""
    from upscayl_cloud.engine import faces

    try:
        faces.remove(_faces_dir(), name)
    except faces.FaceModelError as exc:
        typer.echo(f"error: {exc.public_message}", err=True)
        raise typer.Exit(code=1) from None
    except OSError as exc:
        typer.echo(f"error: {exc.filename or name}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"removed face model {name!r}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

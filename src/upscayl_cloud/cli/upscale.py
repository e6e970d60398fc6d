"""``upscayl-cloud upscale``: the engine on local files, no server needed."""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from upscayl_cloud.engine.catalog import DEFAULT_MODEL, MODELS
from upscayl_cloud.engine.errors import EngineError
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest

ModelName = Enum("ModelName", {name: name for name in MODELS}, type=str)  # type: ignore[misc]


class Scale(StrEnum):
    two = "2"
    four = "4"
    eight = "8"


class Backend(StrEnum):
    auto = "auto"
    ncnn = "ncnn"
    openvino = "openvino"
    onnxruntime = "onnxruntime"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"


class Format(StrEnum):
    png = "png"
    jpg = "jpg"
    webp = "webp"


def output_name(source: Path, model: str, scale: int, fmt: str) -> str:
    """Upscayl's own naming, so results sort next to their originals."""
    return f"{source.stem}_upscayl_{scale}x_{model}.{fmt}"


def upscale(
    inputs: Annotated[list[Path], typer.Argument(help="Images to upscale (JPEG, PNG, WebP).")],
    model: Annotated[ModelName, typer.Option("-m", "--model")] = ModelName[DEFAULT_MODEL],  # type: ignore[valid-type]
    scale: Annotated[Scale, typer.Option("-s", "--scale")] = Scale.four,
    fmt: Annotated[Format, typer.Option("-f", "--format")] = Format.png,
    quality: Annotated[
        int | None, typer.Option("-q", "--quality", min=1, max=100, help="jpg/webp quality.")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder for results (default: beside).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Never use a GPU.")] = False,
    backend: Annotated[
        Backend, typer.Option(help="Runtime (see `upscayl-cloud models backends`).")
    ] = Backend.auto,
    precision: Annotated[
        Precision, typer.Option(help="fp32: full precision on every backend.")
    ] = Precision.auto,
) -> None:
    """Upscale local images with a model of the catalog."""
    from upscayl_cloud.config import get_settings
    from upscayl_cloud.engine.pipeline import upscale_file

    settings = EngineSettings(
        use_gpu=not cpu,
        backend=backend.value,
        precision=precision.value,  # type: ignore[arg-type]
        cache_dir=get_settings().resolved_engine_cache_dir,
        **({"threads": threads} if threads else {}),
    )
    console = Console(stderr=True)
    failures = 0
    for source in inputs:
        folder = out_dir or source.parent
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / output_name(source, model.value, int(scale.value), fmt.value)
        request = UpscaleRequest(model.value, int(scale.value), fmt.value, quality)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(source.name, total=1.0)
            try:
                result = upscale_file(
                    source,
                    target,
                    request,
                    settings=settings,
                    progress=lambda done, task=task: bar.update(task, completed=done),
                )
            except (EngineError, OSError) as exc:
                failures += 1
                message = exc.public_message if isinstance(exc, EngineError) else exc.strerror
                console.print(f"[red]✗[/red] {source}: {message}")
                continue
        console.print(
            f"[green]✓[/green] {source} → {target} ({result.width}x{result.height}, "
            f"{result.size_bytes / 1e6:.2f} MB)"
        )
    if failures:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command(name="upscale")(upscale)

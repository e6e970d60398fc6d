"""``upscayl-cloud upscale``: the engine on local files, no server needed."""

from __future__ import annotations

import time
from dataclasses import replace
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from upscayl_cloud.cli.help import FLAG
from upscayl_cloud.client.files import Duplicate, EarlierResult, Skipped, collect
from upscayl_cloud.client.naming import (
    OutputNames,
    local_name,
    output_folder_problem,
    unwritable_folder_problem,
)
from upscayl_cloud.config import MAX_THREADS
from upscayl_cloud.engine.catalog import DEFAULT_MODEL, MODELS
from upscayl_cloud.engine.errors import EngineError
from upscayl_cloud.engine.options import UpscaleRequest

ModelName = Enum("ModelName", {name: name for name in MODELS}, type=str)  # type: ignore[misc]

#: At most one manifest write in this many seconds (and one at the end): a
#: save rewrites the folder's whole manifest, and once per file grew with
#: the square of the folder's size (5,000 files: minutes of it).
MANIFEST_SAVE_SECONDS = 10.0


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


def upscale(
    inputs: Annotated[
        list[Path], typer.Argument(help="Images (JPEG, PNG, WebP) and folders of them.")
    ],
    model: Annotated[ModelName, typer.Option("-m", "--model")] = ModelName[DEFAULT_MODEL],  # type: ignore[valid-type]
    scale: Annotated[Scale, typer.Option("-s", "--scale")] = Scale.four,
    fmt: Annotated[Format, typer.Option("-f", "--format")] = Format.png,
    quality: Annotated[
        int | None, typer.Option("-q", "--quality", min=1, max=100, help="jpg/webp quality.")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Folder for results, keeping subfolders (default: beside)."
        ),
    ] = None,
    recursive: Annotated[
        bool,
        typer.Option("-r", "--recursive", metavar=FLAG, help="Also the images in subfolders."),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads (default: UPSCAYL_ENGINE_THREADS, else all cores).",
            min=1,
            max=MAX_THREADS,
        ),
    ] = None,
    cpu: Annotated[
        bool,
        typer.Option(
            "--cpu", metavar=FLAG, help="Never use a GPU (as UPSCAYL_ENGINE_USE_GPU=false)."
        ),
    ] = False,
    backend: Annotated[
        Backend | None,
        typer.Option(
            help="Runtime (default: UPSCAYL_ENGINE_BACKEND, else auto; "
            "see `upscayl-cloud models backends`).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            help="fp32: full precision on every backend; auto: bf16/fp16 where faster "
            "(default: UPSCAYL_ENGINE_PRECISION, else auto).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Upscale local images with a model of the catalog.

    Folders are found as ``client upscale`` finds them (the same rules: files
    recognised by their bytes, hidden files and earlier results skipped):
    what is no JPEG, PNG or WebP image (or cannot be read) is skipped with
    its reason when met in a folder, and fails the run (exit 1) when named
    on the command line. An image that cannot be upscaled (truncated,
    corrupt, over the image limits) fails the run wherever it was found;
    the other files are still done. An output folder (``-o``) that is a
    file or takes no file is a usage error (exit 2), before any work.

    The engine is configured as the service's workers are (``UPSCAYL_ENGINE_*``,
    the encoder settings, the image limits), with these flags over it."""
    from upscayl_cloud.config import get_settings
    from upscayl_cloud.engine.pipeline import upscale_file
    from upscayl_cloud.worker import configured_engine

    if out_dir is not None:
        _check_output_folder(out_dir)
    configured = configured_engine(get_settings())
    settings = replace(
        configured,
        use_gpu=configured.use_gpu and not cpu,
        backend=backend.value if backend else configured.backend,
        precision=precision.value if precision else configured.precision,
        threads=threads or configured.threads,
    )
    console = Console(stderr=True)
    request = UpscaleRequest(model.value, int(scale.value), fmt.value, quality)
    failures = 0
    everything = collect(inputs, recursive)
    if not everything:
        console.print("No images found")
        return
    # Each result a name of its own: photo.jpg and photo.png (or a/x.png and
    # b/x.png with -o) would otherwise write one file, and report two.
    names = OutputNames(f.path for f in everything if not isinstance(f, EarlierResult))
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    saved = time.monotonic()
    try:
        with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
            for found in everything:
                if isinstance(found, Skipped):
                    named = found.path in inputs and not isinstance(found, Duplicate)
                    failures += named
                    mark = "[red]✗[/red]" if named else "[yellow]skipped[/yellow]"
                    said = escape(f"{found.path}: {found.reason}")  # paths are no markup
                    bar.console.print(f"{mark} {said}", soft_wrap=True)
                    continue
                folder = (out_dir / found.relative.parent) if out_dir else found.path.parent
                task = bar.add_task(found.path.name, total=1.0)
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    # A read-only folder failed only at the encode, after the work.
                    if (problem := unwritable_folder_problem(folder)) is not None:
                        raise OSError(problem)
                    if (problem := _unnameable_folder_problem(folder)) is not None:
                        raise OSError(problem)
                    # The client's naming: Upscayl's, a stem too long shortened.
                    name = local_name(found.path, int(scale.value), model.value, fmt.value)
                    target = names.claim(folder, name, found.path)
                    result = upscale_file(
                        found.path,
                        target,
                        request,
                        settings=settings,
                        progress=lambda done, task=task: bar.update(task, completed=done),
                    )
                    # Recorded as client upscale records it: a later run replaces
                    # this result, and no other source's of the same name. Saved
                    # now and then: each save rewrites the folder's manifest.
                    names.written(target, found.path)
                    if time.monotonic() - saved >= MANIFEST_SAVE_SECONDS:
                        names.save()
                        saved = time.monotonic()
                except (EngineError, OSError) as exc:
                    failures += 1
                    said = escape(f"{found.path}: {_why(exc)}")
                    bar.console.print(f"[red]✗[/red] {said}", soft_wrap=True)
                    continue
                except Exception as exc:
                    # Broad on purpose: a local run of a few thousand files
                    # ended at one file's UnicodeEncodeError from pyvips (a
                    # name that is not UTF-8), with nothing done and no word
                    # on the others. What no one foresaw fails that file,
                    # named with its class so that it can be reported; the
                    # run goes on and exits 1. Ctrl-C is no Exception.
                    failures += 1
                    said = escape(f"{found.path}: unexpected {type(exc).__name__}: {exc}")
                    bar.console.print(f"[red]✗[/red] {said}", soft_wrap=True)
                    continue
                finally:
                    bar.remove_task(task)
                done = escape(f"{found.path} → {target}")
                bar.console.print(
                    f"[green]✓[/green] {done} ({result.width}x{result.height}, "
                    f"{result.size_bytes / 1e6:.2f} MB)",
                    soft_wrap=True,
                )
    finally:
        names.save()  # Ctrl-C and failures too: what was written is known as ours
    if failures:
        raise typer.Exit(code=1)


def _check_output_folder(out_dir: Path) -> None:
    """Refuse, as a usage error naming the folder (exit 2), an ``-o`` that
    is a file (or lies below one) or takes no file (a read-only disk, no
    permission), before any work, as ``client upscale`` refuses it. Each
    file failed on its own instead (exit 1), the folder's fault told as the
    input's: ``✗ in/a.png: File exists``."""
    problem = (
        output_folder_problem(out_dir)
        or unwritable_folder_problem(out_dir)
        or _unnameable_folder_problem(out_dir)
    )
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="'-o' / '--output'")


def _unnameable_folder_problem(folder: Path) -> str | None:
    """Why the encoder cannot be given a path in ``folder``, or None.

    pyvips passes file names to libvips as UTF-8, so a result in a folder
    whose name is not (a Latin-1 ``caf\\xe9/`` from an old disk) failed
    with UnicodeEncodeError at its encode, after all the upscaling. Its
    sources are read all the same (see ``engine.decode``); their results
    can go elsewhere with ``-o``."""
    try:
        str(folder.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"{folder}: results cannot be written in a folder whose path is not "
            "UTF-8 (pyvips names files to libvips in UTF-8): choose another with -o"
        )
    return None


def _why(exc: EngineError | OSError) -> str:
    """One line for a failed file (the engine reports libvips's write
    failures, a full disk say, as ``OSError``)."""
    if isinstance(exc, EngineError):
        return exc.public_message
    return str(exc.strerror or exc)


def register(app: typer.Typer) -> None:
    app.command(name="upscale")(upscale)

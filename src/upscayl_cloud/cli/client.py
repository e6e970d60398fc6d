"""``upscayl-cloud client ...``: use any Upscayl Cloud server from the shell.

``client upscale`` is :func:`upscayl_cloud.client.upscale` with rich progress
bars (upload bytes, processing percent per task) and a summary table; it exits
1 when any file failed, so scripts can rely on its status. ``status``,
``history`` and ``models`` are thin views of the other operations.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from upscayl_cloud.cli.help import FLAG, HELP_MARKUP
from upscayl_cloud.client import (
    FORMATS,
    MODELS,
    SCALES,
    Client,
    FileResult,
    UnwritableOutputError,
    UpscaleInterrupted,
    UpscaylError,
    upscale,
)
from upscayl_cloud.client._core import (
    capabilities_data,
    capabilities_path,
    server_url,
    url_problem,
)
from upscayl_cloud.client.naming import output_folder_problem

client_app = typer.Typer(
    rich_markup_mode=HELP_MARKUP,
    help="Talk to an Upscayl Cloud server (UPSCAYL_URL, UPSCAYL_API_KEY).",
    no_args_is_help=True,
)


def _url(value: str | None) -> str | None:
    """A URL without a scheme is a usage error at once, not five retries."""
    problem = url_problem(value.rstrip("/")) if value else None
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


Url = Annotated[
    str | None,
    typer.Option("--url", envvar="UPSCAYL_URL", help="Server base URL.", callback=_url),
]
Key = Annotated[
    str | None,
    typer.Option("--key", envvar="UPSCAYL_API_KEY", help="API key.", show_default=False),
]

AsJson = Annotated[bool, typer.Option("--json", metavar=FLAG, help="Print the server's JSON.")]
_STYLE = {"done": "green", "failed": "red", "skipped": "yellow", "completed": "green"}


def _console() -> Console:
    return Console(highlight=False)


def _fail(exc: UpscaylError, url: str | None) -> typer.Exit:
    """Exit 1 with the error, in the command line's words where the SDK's
    are a programmer's (``api_key``), and naming the server that could not
    be reached (``url``: the ``--url`` given, else UPSCAYL_URL's, else the
    default)."""
    message = exc.message
    if exc.code == "MISSING_API_KEY":
        message = "pass --key or set UPSCAYL_API_KEY"
    elif exc.code == "CONNECTION_ERROR":
        server = server_url(url)
        message += f"; is the server at {server} running? (--url or UPSCAYL_URL names another)"
    said = escape(f"{exc.code}: {message}")  # a path or server's words are no markup
    Console(stderr=True, highlight=False).print(f"[red]error:[/] {said}")
    return typer.Exit(code=1)


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plain(value: object) -> str:
    """A field as the API writes it: ``true``/``false``, not Python's ``True``."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _check(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    """Validate against the spec's enum here, for a message before any upload."""
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=name)
    return value


class _Bytes(DownloadColumn):
    """Byte counts on the upload row only (processing rows count percent)."""

    def render(self, task: Any) -> Text:
        return super().render(task) if task.fields.get("bytes") else Text("")


class _Speed(TransferSpeedColumn):
    def render(self, task: Any) -> Text:
        return super().render(task) if task.fields.get("bytes") else Text("")


class _Bars:
    """The upscale hooks drawn as rich bars (called from upload threads: locked)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.errors = Console(stderr=True, highlight=False)
        self.upload: TaskID | None = None
        self.tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def uploading(self, total_bytes: int) -> None:
        if total_bytes:
            self.upload = self.progress.add_task("upload", total=total_bytes, bytes=True)

    def uploaded(self, delta: int) -> None:
        if self.upload is not None:
            with self._lock:
                self.progress.advance(self.upload, delta)

    def processing(self, task_id: str, files: int, percent: float) -> None:
        with self._lock:
            if task_id not in self.tasks:
                # Whole: the id is what `client status` takes.
                label = f"task {task_id} ({files} file{'s' * (files != 1)})"
                self.tasks[task_id] = self.progress.add_task(label, total=100)
            self.progress.update(self.tasks[task_id], completed=percent)

    def finished(self, result: FileResult) -> None:
        if result.status != "done" or result.reason:  # a done file's reason: its preview
            colour = _STYLE.get(result.status, "red") if result.status != "done" else "yellow"
            self.progress.console.print(
                f"[{colour}]{result.status}[/] {escape(f'{result.source}: {result.reason}')}"
            )

    def notice(self, message: str) -> None:
        """On stderr: a task that shows no progress (no worker may be running)."""
        self.errors.print(f"[yellow]notice:[/] {escape(message)}")


def _id_column(header: str, ids: Iterable[str]) -> Column:
    """A column that shows ids whole, on one line, however narrow the terminal:
    an id cut to "dbf6fd4d-2…" or folded across lines cannot be pasted into
    `client status`. The other columns shrink instead."""
    return Column(header, no_wrap=True, min_width=max((len(i) for i in ids), default=0))


def _summary(results: list[FileResult]) -> Table:
    table = Table(title="Summary")
    table.add_column("File", overflow="fold")
    table.add_column("Status")
    table.add_column("Result / reason", overflow="fold")
    for r in results:
        detail = str(r.output) if r.output else (r.reason or "")
        status = Text(r.status, style=_STYLE.get(r.status, "red"))
        table.add_row(Text(str(r.source)), status, Text(detail))
    return table


@client_app.command("upscale")
def upscale_command(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH...", help="Images and folders.", show_default=False),
    ],
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", metavar=FLAG, help="Walk subfolders.")
    ] = False,
    model: Annotated[str, typer.Option("-m", "--model", help="See `client models`.")] = MODELS[0],
    scale: Annotated[str, typer.Option("-s", "--scale", help="2, 4 or 8.")] = "4",
    fmt: Annotated[str, typer.Option("-f", "--format", help="png, jpg or webp.")] = "jpg",
    face: Annotated[
        bool, typer.Option("--face", metavar=FLAG, help="Ask for face enhancement.")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder for results (default: beside).")
    ] = None,
    thumbnails: Annotated[
        bool, typer.Option(metavar=FLAG, help="Also download WebP previews.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Most files per task (or the server's limit, if lower).")
    ] = 50,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="Stop waiting for the tasks this long after the last one started "
            "(they run on; `client status` finds their results). Default: wait.",
            show_default=False,
        ),
    ] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Upload images, upscale them on the server, download the results."""
    _check(model, MODELS, "--model")
    _check(scale, SCALES, "--scale")
    _check(fmt, FORMATS, "--format")
    problem = output_folder_problem(out_dir) if out_dir is not None else None
    if problem is not None:  # before any upload, not after the server has charged
        raise typer.BadParameter(problem, param_hint="'-o' / '--output'")
    console = _console()
    try:
        api = Client(url, key)
    except UpscaylError as exc:
        raise _fail(exc, url) from exc
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _Bytes(),
        _Speed(),
        TimeElapsedColumn(),
    )
    bars = None
    try:
        with api, Progress(*columns, console=console, transient=False) as progress:
            bars = _Bars(progress)
            report = upscale(
                paths,
                model=model,
                scale=scale,
                fmt=fmt,
                face=face,
                out_dir=out_dir,
                recursive=recursive,
                thumbnails=thumbnails,
                client=api,
                batch_size=batch_size,
                reporter=bars,
                timeout=timeout,
            )
    except (NotADirectoryError, UnwritableOutputError) as exc:
        # Raised before anything is uploaded: a usage error, as for -o.
        hint = "'-o' / '--output'" if out_dir is not None else "PATH..."
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    except KeyboardInterrupt as exc:
        _interrupted(console, exc, bars)
        raise typer.Exit(code=130) from None
    if not report.results:
        console.print("No images found")
        return
    console.print(_summary(report.results))
    done = sum(r.status == "done" for r in report.results)
    skipped = sum(r.status == "skipped" for r in report.results)
    console.print(f"{done} done, {len(report.failed)} failed, {skipped} skipped")
    if report.failed:
        raise typer.Exit(code=1)


def _interrupted(console: Console, exc: KeyboardInterrupt, bars: _Bars | None) -> None:
    """Say what Ctrl-C left behind: started tasks run on regardless (and
    are charged), a start-task that was on the wire may have created one,
    and unfinished multipart uploads resume."""
    ids = list(exc.task_ids) if isinstance(exc, UpscaleInterrupted) else []
    ids += [i for i in (bars.tasks if bars else {}) if i not in ids]
    maybe = exc.maybe_started if isinstance(exc, UpscaleInterrupted) else []
    if ids:
        console.print(
            f"[yellow]interrupted[/]; tasks already started (they run on, and are "
            f"charged; `client status TASK` shows their result links): {', '.join(ids)}. "
            "Running the same command again sends their files again; it resumes "
            "large uploads."
        )
    if maybe:
        files = escape(", ".join(str(path) for path in maybe))
        console.print(
            f"[yellow]interrupted[/] while a task was being started for {files}: the server "
            "may have created (and charged) it. `client history` shows whether it did "
            "(and `client status TASK` its results) before you send them again."
        )
    if not ids and not maybe:
        console.print(
            "[yellow]interrupted[/]; no task was started. "
            "Run the same command again to resume large uploads."
        )


@client_app.command("status")
def status_command(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="A taskId.")],
    as_json: AsJson = False,
    url: Url = None,
    key: Key = None,
) -> None:
    """Show one task: status, progress, options and result links."""
    try:
        with Client(url, key) as api:
            data = api.get_task_status(task_id)
    except UpscaylError as exc:
        raise _fail(exc, url) from exc
    console = _console()
    if as_json:
        console.print_json(json.dumps(data))
        return
    state = str(data.get("status", ""))
    colour = _STYLE.get(state, "yellow")
    progress = escape(str(data.get("progress", "0")))
    console.print(f"Task {escape(task_id)}: [{colour}]{escape(state)}[/] {progress}%")
    for name in ("model", "scale", "saveImageAs", "enhanceFace", "batchMode", "error"):
        if data.get(name) not in (None, ""):
            console.print(f"  {name}: {escape(_plain(data[name]))}")
    files = data.get("files") or []
    if files:
        # Names and links fold rather than end in "…": they are there to be copied.
        table = Table(*(Column(h, overflow="fold") for h in ("Original", "Result", "Size", "Link")))
        for f in files:
            dims = f.get("dimensions") or {}
            size = f"{dims.get('width', '?')}x{dims.get('height', '?')}"
            name = str(f.get("processedFileName", ""))
            cells = (f.get("originalFileName", ""), name, size, f.get("downloadLink") or "")
            table.add_row(*(Text(str(cell)) for cell in cells))
        console.print(table)


@client_app.command("history")
def history_command(
    failed: Annotated[
        bool, typer.Option("--failed", metavar=FLAG, help="Only failed tasks.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="How many tasks (newest first).")] = 20,
    as_json: AsJson = False,
    url: Url = None,
    key: Key = None,
) -> None:
    """List your tasks, newest first (pages are followed up to --limit)."""
    filters: dict[str, Any] = {"failed": True} if failed else {}
    try:
        with Client(url, key) as api:
            items = list(api.iter_history(max_items=limit, limit=min(limit, 100), **filters))
    except UpscaylError as exc:
        raise _fail(exc, url) from exc
    console = _console()
    if as_json:
        console.print_json(json.dumps(items))
        return
    if not items:
        console.print("No tasks")
        return
    console.print(_history_table(items) if console.width >= _TABLE_WIDTH else _history_list(items))


#: Narrower than this, seven columns beside a whole task id squeeze the status
#: to "com…": each task is then a short block of lines instead.
_TABLE_WIDTH = 140


def _history_table(items: list[dict[str, Any]]) -> Table:
    table = Table(
        _id_column("Task", (str(t.get("taskId", "-")) for t in items)),
        *(Column(name, no_wrap=True) for name in ("Created", "Status", "Model", "Scale", "Files")),
        Column("Error", overflow="fold", min_width=20),
    )
    for t in items:
        status = str(t.get("status", ""))
        table.add_row(
            Text(str(t.get("taskId", "-"))),
            _when(t.get("createdAt")),
            Text(status, style=_STYLE.get(status, "yellow")),
            Text(str(t.get("model", ""))),
            Text(str(t.get("scale", ""))),
            str(len(t.get("files") or [])),
            Text(str(t.get("error") or "")),
        )
    return table


def _history_list(items: list[dict[str, Any]]) -> Text:
    """The same facts as the table, one task per block, for narrow terminals."""
    text = Text()
    for t in items:
        status = str(t.get("status", ""))
        files = len(t.get("files") or [])
        text.append(str(t.get("taskId", "-")))
        text.append(f"  {status}\n", style=_STYLE.get(status, "yellow"))
        text.append(
            f"  {_when(t.get('createdAt'))} · {t.get('model', '')} · {t.get('scale', '')}x"
            f" · {files} file{'s' if files != 1 else ''}\n"
        )
        if t.get("error"):
            text.append(f"  error: {t['error']}\n", style="red")
    return text


@client_app.command("models")
def models_command(url: Url = None, key: Key = None) -> None:
    """The models a task can ask for: the server's list when it publishes one
    (with face enhancement availability), else the spec's."""
    console = _console()
    info, why_not = _server_capabilities(server_url(url), key)
    if why_not is not None:  # the spec's list, said to be that
        Console(stderr=True, highlight=False).print(
            f"{escape(why_not)}; listing the spec's models", style="yellow", soft_wrap=True
        )
    listed = (info or {}).get("models") or []
    names = [str(m.get("name")) if isinstance(m, dict) else str(m) for m in listed]
    names = names or list(MODELS)
    default = str((info or {}).get("defaultModel") or MODELS[0])
    notes = {default: "default", "quick-clear-4x": "fastest"}
    for name in names:
        note = f"  ({notes[name]})" if name in notes else ""
        console.print(f"{escape(name)}{note}")
    if info is not None and "faceEnhancement" in info:
        if info["faceEnhancement"]:
            console.print("Face enhancement (--face): available")
        else:  # and why: the server says what an operator can do about it
            why = info.get("faceEnhancementMessage")
            reason = f": {escape(str(why))}" if why else ""
            console.print(f"Face enhancement (--face): unavailable{reason}", soft_wrap=True)


def _server_capabilities(url: str, key: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The server's capabilities (or None where it publishes none), and why
    they could not be had. No key is needed to ask (the spec has no such
    operation; ours answers anyone), and a key the server refuses is left
    out: ``client models`` used to list the spec's models whenever no key
    was set, the key was wrong or no server answered, saying nothing."""
    try:
        with httpx.Client(timeout=10) as http:
            path = capabilities_path(http.get(url + "/openapi.json"))
            if path is None:
                return None, None
            headers = {"X-API-Key": key} if key else {}
            answer = http.get(url + path, headers=headers)
            if answer.status_code == 401 and key:
                answer = http.get(url + path)
    except httpx.HTTPError as exc:
        return None, f"Cannot reach {url} ({type(exc).__name__}: {exc})"
    if not answer.is_success:
        return None, f"{url}{path} answered {answer.status_code}"
    try:
        return capabilities_data(answer), None
    except UpscaylError as exc:  # a 200 that is no JSON object (a proxy's page)
        return None, f"{url}{path}: {exc}"


def register(app: typer.Typer) -> None:
    app.add_typer(client_app, name="client")

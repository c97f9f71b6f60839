#!/usr/bin/env bash
# Wheels for an offline install beside a node's own torch. Run it where there is network, with the
# node's Python version (a cluster's login node), from this checkout:
#
#   tools/wheelhouse.sh DIR [TORCH_PIN ...] [-- PIP_DOWNLOAD_OPTIONS ...]
#
# TORCH_PIN: the node's torch and torchvision, e.g. torch==2.11.0 torchvision==0.26.0 (default: those
# of the running Python). DIR gets every other dependency, resolved against those pins, plus
# setuptools to build this checkout; torch, torchvision and their CUDA libraries are left out, so
# the node's stay. Then on the node: pip install --no-index --find-links DIR -e .
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [torch==X torchvision==Y] [-- pip download options]" >&2; exit 2; }
dir=$1; shift
pins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pins+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
if [ ${#pins[@]} -eq 0 ]; then
  mapfile -t pins < <(python -m pip list --format=freeze | grep -iE '^(torch|torchvision)==')
  [ ${#pins[@]} -eq 2 ] || { echo "no torch and torchvision installed here: name the node's, e.g. torch==2.11.0 torchvision==0.26.0" >&2; exit 2; }
fi
cd "$(dirname "$0")/.."
mkdir -p "$dir"
constraints=$(mktemp)
printf '%s\n' "${pins[@]}" > "$constraints"
python -m pip download -q -d "$dir" -c "$constraints" ".[test]" "setuptools>=68" wheel "$@"
rm -f "$constraints" "$dir"/loss_to_correct-* "$dir"/torch-* "$dir"/torchvision-* "$dir"/triton-* \
  "$dir"/nvidia_* "$dir"/cuda_*
echo "wheelhouse $dir: $(ls "$dir" | wc -l) wheels, $(du -sh "$dir" | cut -f1), for ${pins[*]}"

#!/usr/bin/env bash
# The README's first command: set up, then run the main job on the embedded default model:
# generate four images with content credentials and a watermark, then verify one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export EASEL_HOME=${EASEL_HOME:-$PWD/.easel-home}
OUT=${OUT:-$PWD/outputs/quickstart}
rm -rf "$OUT"
.venv/bin/easel generate "fox face" --style twemoji -n 4 --seed 0 -o "$OUT"
first=$(ls "$OUT"/*.png | head -n 1)
.venv/bin/easel verify "$first"

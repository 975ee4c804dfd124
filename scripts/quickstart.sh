#!/usr/bin/env bash
# The README's first command: set up, then run the main job on the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export EASEL_HOME=${EASEL_HOME:-$PWD/.easel-home}
.venv/bin/easel corpus fetch
.venv/bin/easel corpus build --size 64
.venv/bin/easel corpus show --size 64

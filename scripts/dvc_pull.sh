#!/usr/bin/env bash
# Fetch shared artifacts with DVC, verify them and make Snakemake see them as up to date
# (`make pull`; docs/dvc.md). Arguments go to scripts/restore_mtimes.py:
#   scripts/dvc_pull.sh                        everything recorded in dvc.lock
#   scripts/dvc_pull.sh results/distill        the distilled checkpoints + their upstream
#   scripts/dvc_pull.sh --only results/distill just the checkpoints (prints how to run frozen)
# Exit status: 0 ok, 2 pull or verification failed (nothing touched), 3 workflow code differs
# from dvc.lock, 1 other errors.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/restore_mtimes.py --pull "$@"

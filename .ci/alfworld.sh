#!/usr/bin/env bash
# Installs the alfworld extra (alfworld 0.4.2, textworld, fast-downward) into a venv from a wheel cache.
# Usage: bash .ci/alfworld.sh .venv/bin/python
# The wheels live in ${SKILLMEM_WHEEL_CACHE:-$HOME/.cache/skillmem/wheels}; when they are missing they are
# built there first (fast-downward-textworld compiles from source: minutes, needs g++ and cmake), so the
# build happens once per machine.
# Under CI (CI=true) any failure exits 1 with its cause: CI must not go green without real ALFWorld.
# Elsewhere it warns and exits 0, and the ALFWorld tests skip with the reason shown.
set -uo pipefail
REQS=(alfworld==0.4.2 textworld)
# fast-downward-textworld's setup.py runs a bare `python build.py`: wheels.sh puts this venv's bin/
# first on PATH, or the build picks up whatever `python` the machine has (a pyenv shim or a system
# Python whose standard library does not import inside the build: "No module named 'glob'").
source "$(dirname "$0")/wheels.sh" alfworld "real ALFWorld" "the real-ALFWorld tests" "${1:-}"
CACHE=$WHEEL_CACHE

"$PY" -c "import alfworld.agents.environment.alfred_tw_env, textworld, fast_downward" 2>/dev/null \
  && { echo "alfworld.sh: alfworld already installed in $PY" >&2; exit 0; }
mkdir -p "$CACHE" || fail "cannot create the wheel cache $CACHE"

have_wheels() {
  ls "$CACHE"/alfworld-0.4.2-*.whl "$CACHE"/textworld-*.whl "$CACHE"/fast_downward_textworld-*.whl >/dev/null 2>&1
}

if ! have_wheels; then
  need_build_tools fast-downward-textworld
  echo "alfworld.sh: building wheels into $CACHE (once per machine, about 2-6 minutes)" >&2
  log=$(mktemp)
  if ! "$PY" -m pip wheel -q --wheel-dir "$CACHE" "${REQS[@]}" >"$log" 2>&1; then
    # pip repeats a build's whole output; its last lines carry the cause.
    grep -v "^WARNING: Location 'file:" "$log" | tail -n 40 >&2
    rm -f "$log"
    fail "pip wheel ${REQS[*]} failed (its last lines are above)"
  fi
  rm -f "$log"
fi

# Keep the venv's torch (and everything else already pinned there) as it is.
pin_constraints torch torchvision numpy

if ! "$PY" -m pip install -q --no-index --find-links "$CACHE" -c "$CONSTRAINTS" "${REQS[@]}" >&2; then
  echo "alfworld.sh: some dependencies are not in the cache; trying with the package index" >&2
  "$PY" -m pip install -q --find-links "$CACHE" -c "$CONSTRAINTS" "${REQS[@]}" >&2 || fail "pip install ${REQS[*]} failed"
fi
err=$("$PY" -c "import alfworld.agents.environment.alfred_tw_env, textworld, fast_downward" 2>&1) \
  || fail "alfworld installed but does not import: $(echo "$err" | tail -n 1)"
echo "alfworld.sh: alfworld installed in $PY" >&2

#!/usr/bin/env bash
# Installs the alfworld extra (alfworld 0.4.2, textworld, fast-downward) into a venv from a wheel cache.
# Usage: bash .ci/alfworld.sh .venv/bin/python
# The wheels live in ${SKILLMEM_WHEEL_CACHE:-$HOME/.cache/skillmem/wheels}; when they are missing they are
# built there first (fast-downward-textworld compiles from source: minutes, needs g++ and cmake), so the
# build happens once per machine. Never fails the caller: on any error it warns and exits 0, and the
# ALFWorld tests then skip.
set -uo pipefail
PY=${1:?usage: bash .ci/alfworld.sh PATH/TO/venv/bin/python}
CACHE=${SKILLMEM_WHEEL_CACHE:-$HOME/.cache/skillmem/wheels}
REQS=(alfworld==0.4.2 textworld)

warn() { echo "alfworld.sh: WARNING: $*; the ALFWorld tests will skip" >&2; exit 0; }

"$PY" -c "" 2>/dev/null || warn "no working python at $PY"

"$PY" -c "import alfworld.agents.environment.alfred_tw_env, textworld, fast_downward" 2>/dev/null \
  && { echo "alfworld.sh: alfworld already installed in $PY" >&2; exit 0; }
mkdir -p "$CACHE" || warn "cannot create the wheel cache $CACHE"

have_wheels() {
  ls "$CACHE"/alfworld-0.4.2-*.whl "$CACHE"/textworld-*.whl "$CACHE"/fast_downward_textworld-*.whl >/dev/null 2>&1
}

if ! have_wheels; then
  if ! command -v g++ >/dev/null || ! command -v cmake >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "alfworld.sh: installing g++ and cmake to build fast-downward" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ cmake make >&2 || warn "apt-get could not install g++ and cmake"
    else
      warn "building fast-downward needs g++ and cmake; install them and rerun"
    fi
  fi
  echo "alfworld.sh: building wheels into $CACHE (once per machine, about 1-6 minutes)" >&2
  "$PY" -m pip wheel -q --wheel-dir "$CACHE" "${REQS[@]}" >&2 || warn "pip wheel ${REQS[*]} failed (see above)"
fi

# Keep the venv's torch (and everything else already pinned there) as it is.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PY" -m pip freeze 2>/dev/null | grep -iE '^(torch|torchvision|numpy)==' > "$CONSTRAINTS" || true

if ! "$PY" -m pip install -q --no-index --find-links "$CACHE" -c "$CONSTRAINTS" "${REQS[@]}" >&2; then
  echo "alfworld.sh: some dependencies are not in the cache; trying with the package index" >&2
  "$PY" -m pip install -q --find-links "$CACHE" -c "$CONSTRAINTS" "${REQS[@]}" >&2 || warn "pip install ${REQS[*]} failed"
fi
"$PY" -c "import alfworld.agents.environment.alfred_tw_env, textworld, fast_downward" \
  || warn "alfworld installed but does not import"
echo "alfworld.sh: alfworld installed in $PY" >&2

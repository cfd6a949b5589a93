#!/usr/bin/env bash
# Print constraints.txt for the environment of the given Python (default: python3): every installed
# package, transitive ones included, at its installed version; the project itself left out, and
# torch's local build label (2.13.0+cpu) dropped, so that the pin holds for its CPU and CUDA builds
# of the same version alike. Used by scripts/check-newest.sh --update.
set -euo pipefail
py=${1:-python3}
cat <<'HEAD'
# The versions the whole test suite last passed with (Python 3.11, Linux x86_64): every package
# installed by `pip install torch==<below>` then `pip install -e '.[dev]'`, transitive ones included.
# Install with them: pip install -c constraints.txt ...  (demo.sh, .ci/run and the README do).
# torch: the CPU build was tested; a CUDA build of the same version satisfies the pin too.
# Do not edit by hand: scripts/check-newest.sh --update rewrites it when the newest releases pass.
HEAD
"$py" -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null \
    | grep -v -e '^#' -e '^-e ' -e '^bert-pipeline[= @]' \
    | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
    | LC_ALL=C sort -f

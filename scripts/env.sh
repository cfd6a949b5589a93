# Sourced by demo.sh and test.sh: choose the Python environment and install the project into it.
#
# Inside a virtual environment (or a conda environment) it installs there; outside one it makes
# .venv in the checkout and installs there (system Pythons refuse pip installs: PEP 668).
# Every package at the version the tests passed with (constraints.txt). One line per step;
# pip's own output goes to install.log, which an error points to.
#
#   source scripts/env.sh; install_project demo      # sets $py, the environment's python

log=$PWD/install.log
: >"$log"

step() {  # step WHAT CMD...: one line, with the step's time
    local what=$1 t0=$SECONDS
    shift
    printf '%s ... ' "$what"
    if "$@" >>"$log" 2>&1; then
        echo "done ($((SECONDS - t0)) s)"
    else
        echo "failed after $((SECONDS - t0)) s. The last lines of $log:"
        tail -n 20 "$log" | sed 's/^/    /'
        exit 1
    fi
}

choose_env() {  # sets $py
    if python3 -c 'import os, sys; sys.exit(0 if sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") else 1)'; then
        py=$(python3 -c 'import sys; print(sys.executable)')
        echo "installing into the active environment $(python3 -c 'import sys; print(sys.prefix)')"
    elif [[ -x .venv/bin/python ]]; then
        py=$PWD/.venv/bin/python
        echo "installing into $PWD/.venv (made by an earlier run)"
    else
        if ! python3 -m venv .venv >>"$log" 2>&1; then
            echo "could not create $PWD/.venv (see $log); on Debian or Ubuntu: sudo apt install python3-venv" >&2
            exit 1
        fi
        py=$PWD/.venv/bin/python
        echo "made $PWD/.venv (not tracked by git); installing there. Later: source .venv/bin/activate"
    fi
}

install_project() {  # install_project EXTRAS: torch (kept if present), then the project with [EXTRAS]
    choose_env
    local torch_pin constraints=constraints.txt installed
    torch_pin=$(grep -E '^torch==' constraints.txt)
    if installed=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
        # keep the torch already there (e.g. a CUDA build): the rest is pinned, torch is not
        echo "torch $installed found: kept (tested: ${torch_pin#torch==})"
        constraints=$(mktemp "${TMPDIR:-/tmp}/constraints.XXXXXX")
        grep -v -E '^torch==' constraints.txt >"$constraints"
    else
        # first, on its own: pip resolving torch together with the rest could pick a CUDA build
        step "installing $torch_pin" "$py" -m pip install --disable-pip-version-check -c constraints.txt "$torch_pin"
    fi
    step "installing the project and its dependencies ([$1])" \
        "$py" -m pip install --disable-pip-version-check -c "$constraints" -e ".[$1]"
}

#!/usr/bin/env bash
# Run the dataset, data module, store and task tests against the newest TorchGeo on Python 3.12.
#
# pyproject.toml declares torchgeo>=0.8.1,<0.11, zarr>=3.1,<3.5, numpy>=2,<3 and Python >= 3.11;
# CI tests the 3.11 pin set (requirements.lock). This script proves the other end of those ranges:
# it builds a Python 3.12 virtual environment OUTSIDE the repository, installs the newest
# releases the ranges allow (TorchGeo 0.10.x, zarr, numcodecs, numpy, rasterio) with our package
# (`pip install -e ".[dev]"`), prints the versions it got and runs the tests below.
#
# Run it once per release, not in CI: torch comes from the package index there (several GB on
# the first run). The machine's pip configuration is ignored (PIP_CONFIG_FILE=/dev/null), so a
# constraints file that caps torch/torchvision to the wheels of one machine does not apply.
# A present venv is reused (the install step then only upgrades what has a newer release).
#
# Usage (from anywhere): tests/compat/torchgeo_latest.sh [extra pytest arguments]
# Environment:
#   COMPAT_VENV    the venv folder (default: $HOME/.cache/msgfm-compat-py312)
#   COMPAT_PYTHON  the Python 3.12+ that creates it (default: python3.12 on PATH, else pyenv's)
#   COMPAT_NO_INSTALL=1  skip the pip step (offline rerun on a venv already built)
# Exit status: pytest's (or 1 when the venv cannot be built).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${COMPAT_VENV:-$HOME/.cache/msgfm-compat-py312}
case "$venv" in
    "$repo"|"$repo"/*) echo "COMPAT_VENV=$venv lies inside the repository $repo: choose a folder outside it" >&2; exit 1 ;;
esac

if [[ ! -x "$venv/bin/python" ]]; then
    # The first candidate that runs and is 3.12+, oldest first (a pyenv shim on PATH may not run).
    python=
    for candidate in ${COMPAT_PYTHON:-} python3.12 $(ls -d "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    if [[ -z "$python" ]]; then
        echo "no Python 3.12+ found (tried COMPAT_PYTHON, python3.12 on PATH, ~/.pyenv/versions/3.12+): set COMPAT_PYTHON" >&2
        exit 1
    fi
    echo "creating $venv with $python"
    "$python" -m venv "$venv"
fi

export PIP_CONFIG_FILE=/dev/null  # no machine constraints file, no local wheel folders
unset PIP_CONSTRAINT PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL
cd "$repo"
if [[ "${COMPAT_NO_INSTALL:-0}" != 1 ]]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # Newest of each package the ranges in pyproject.toml allow; the editable install points the
    # venv at this checkout (rerunning from another checkout re-points it).
    "$venv/bin/python" -m pip install --upgrade --upgrade-strategy eager \
        -e ".[dev]" torchgeo zarr numcodecs numpy rasterio
fi

"$venv/bin/python" - <<'EOF'
import importlib.metadata as metadata
import sys

print("python", sys.version.split()[0])
for name in ("torchgeo", "torch", "torchvision", "zarr", "numcodecs", "numpy", "rasterio",
             "kornia", "lightning", "timm"):
    print(name, metadata.version(name))
EOF

# Globs rather than a list, so that renamed or moved test modules stay in; a glob that matches
# nothing is skipped.
shopt -s nullglob globstar
tests=(
    tests/**/test_dataset*.py tests/**/test_datamodule*.py tests/**/test_finetun*.py
    tests/**/test_task*.py tests/**/test_store_*.py tests/**/test_shard*.py
    tests/**/test_readme.py tests/**/test_*bench*.py
)
if [[ ${#tests[@]} -eq 0 ]]; then
    echo "no test module matched under $repo/tests" >&2
    exit 1
fi
mapfile -t tests < <(printf '%s\n' "${tests[@]}" | sort -u)
printf 'testing %s\n' "${tests[@]}"
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" "${tests[@]}" || status=$?
exit "$status"

"""requirements.lock: its pins, and how the running environment departs from them."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def read_pins(lock: Path = LOCK) -> dict[str, str]:
    """Canonical package name -> pinned version, from a lock of ``name==version`` lines.

    Raises:
        ValueError: naming the lock and the line, for a line that pins nothing exactly.
    """
    pins = {}
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if match is None:
            raise ValueError(f"{lock}:{number}: not an exact pin (name==version): {line!r}")
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def drift_from_lock(lock: Path = LOCK) -> list[str]:
    """Each pinned package that is missing or at another version here, as 'name: why'; an
    empty list means this is the pinned environment."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = []
    for name, pinned in sorted(read_pins(lock).items()):
        have = installed.get(name)
        if have is None:
            drift.append(f"{name}: not installed, pinned {pinned}")
        elif Version(have) != Version(pinned):
            drift.append(f"{name}: {have} installed, pinned {pinned}")
    return drift


LOCK_CPU = Path(__file__).resolve().parent / "data" / "dvc_lock_cpu.json"


def cpu_class() -> list[str]:
    """The SIMD targets numpy dispatches to on this CPU (beyond its baseline), e.g.
    ``["X86_V3"]`` for AVX2. numpy's exp and log, and the BLAS kernels picked for the same CPU,
    round in the last bit differently across these, so the store's Sentinel-1 pixels and its
    statistics are reproduced byte for byte only on a CPU of the same class."""
    from numpy._core import _multiarray_umath as umath

    return sorted(f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f))


def cpu_drift_from_lock(record: Path = LOCK_CPU) -> str | None:
    """Why this CPU's class differs from the one the committed dvc.lock was built on (None
    when it is the same)."""
    built_on = json.loads(record.read_text())["numpy_cpu_dispatch"]
    here = cpu_class()
    return None if here == built_on else f"dvc.lock was built on {built_on}, this CPU is {here}"


if __name__ == "__main__":  # python -m tests.pinned_environment: record this CPU's class
    LOCK_CPU.write_text(json.dumps({"numpy_cpu_dispatch": cpu_class()}, indent=2) + "\n")

"""requirements.lock: its pins, and how the running environment departs from them."""

from __future__ import annotations

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

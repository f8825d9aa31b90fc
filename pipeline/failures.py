"""Bad input is reported, quarantined and skipped: the failure record every stage shares."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from catalogs.atomic_files import write_json


class ItemError(Exception):
    """A catalog item (or one of its files) cannot be used; names the item, path and reason."""

    def __init__(self, item_id: str, path: str | None, reason: str) -> None:
        """Initialize a new ItemError instance.

        Args:
            item_id: the item's id.
            path: the file that cannot be used; None for the item itself.
            reason: why it cannot be used.
        """
        super().__init__(f"{item_id}: {path or '<item>'}: {reason}")
        self.item_id = item_id
        self.path = path
        self.reason = reason


class NothingUsableError(RuntimeError):
    """A stage ended with no usable output: every input failed, or there was none."""


@dataclass(frozen=True)
class Failure:
    """One quarantined input: the stage that met it, the item, the file and the reason."""

    stage: str
    item_id: str
    path: str | None
    reason: str

    @classmethod
    def from_error(cls, stage: str, error: ItemError) -> Failure:
        """The failure ``error`` records, met by ``stage``."""
        return cls(stage, error.item_id, error.path, error.reason)


def write_failures(path: Path, failures: list[Failure]) -> Path:
    """Write the failures of a stage as JSON, atomically (sorted, so reruns compare equal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(
        (asdict(f) for f in failures),
        key=lambda r: (r["stage"], r["item_id"], r["path"] or "", r["reason"]),
    )
    return write_json(path, rows)


def read_failures(path: Path) -> list[Failure]:
    """The failures written by :func:`write_failures` (none if the file does not exist)."""
    if not path.exists():
        return []
    return [Failure(**row) for row in json.loads(path.read_text())]

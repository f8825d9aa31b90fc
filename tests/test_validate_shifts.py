"""The QA shift summary of the build report (pipeline/validate.py)."""

from __future__ import annotations

import numpy as np

from pipeline.validate import shift_summary


def test_a_pair_without_structure_is_counted_apart_from_the_statistics() -> None:
    summary = shift_summary(np.array([0.1, np.nan, 0.3, 0.9]), flag_px=0.5)
    assert summary["pairs_measured"] == 3 and summary["pairs_without_structure"] == 1
    assert summary["flagged"] == 1 and summary["max_px"] == 0.9
    assert summary["p50_px"] == 0.3


def test_only_pairs_without_structure_give_no_statistics() -> None:
    summary = shift_summary(np.array([np.nan]), flag_px=0.5)
    assert summary["pairs_measured"] == 0 and summary["pairs_without_structure"] == 1
    assert summary["max_px"] is None and summary["p50_px"] is None

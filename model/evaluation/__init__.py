"""Downstream evaluation: benchmark metrics and classical baselines."""

from model.evaluation.baselines import (
    bicubic_upsample,
    brovey,
    cloudy_input,
    gram_schmidt,
    majority_class,
    majority_scores,
)
from model.evaluation.metrics import ClassificationMetrics, RestorationMetrics, SegmentationMetrics

__all__ = ["ClassificationMetrics", "RestorationMetrics", "SegmentationMetrics",
           "bicubic_upsample", "brovey", "cloudy_input", "gram_schmidt", "majority_class",
           "majority_scores"]

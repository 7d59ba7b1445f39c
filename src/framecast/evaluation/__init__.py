"""Evaluation: the one loop that scores predictors (:mod:`.run`)."""

from framecast.evaluation.run import Candidate, default_metrics, evaluate, limit, score

__all__ = ["Candidate", "default_metrics", "evaluate", "limit", "score"]

"""Relearn an artifact's weights from execution traces: Algorithm 1 plus a certificate.

This package imports the runtime only, never the compiler. Its phases and modules are
mapped in docs/ARCHITECTURE.md ("The learner"); `learn` (learn.py) is the entry point.
"""

from lat.learner.domain import domain_words, input_lengths
from lat.learner.learn import LearnResult, learn
from lat.learner.traces import Traces

__all__ = ["LearnResult", "Traces", "domain_words", "input_lengths", "learn"]

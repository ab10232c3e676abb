"""On-device learning: rules (rules.py, fixed-point kernels and float twins), the Learner, and training loops.

docs/learning.md states the integer formulas; the C runtime mirrors the fixed-point kernels.
"""
from .learner import RULE_HELP, RULES, Learner

__all__ = ["Learner", "RULES", "RULE_HELP"]

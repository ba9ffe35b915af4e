"""modelops trainer: data, training, evaluation, artifacts and the accuracy gate."""

from .gate import Decision, GatePolicy, Reason, decide

__all__ = ["Decision", "GatePolicy", "Reason", "decide"]
__version__ = "0.1.0"

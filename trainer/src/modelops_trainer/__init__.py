"""modelops trainer: data, training, evaluation and writing artifacts (the format and the
accuracy gate are the contract's: :mod:`modelops_contract`)."""

__version__ = "0.1.0"

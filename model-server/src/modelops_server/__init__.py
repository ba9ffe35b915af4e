"""modelops model server: seed-compatible and Open Inference Protocol v2 API for one model."""

__version__ = "0.1.0"

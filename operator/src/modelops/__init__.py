"""modelops operator and local mode: ModelDeployment reconciliation and the modelops CLI."""

__version__ = "0.1.0"

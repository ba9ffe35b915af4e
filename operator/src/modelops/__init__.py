"""modelops operator and local mode: ModelDeployment reconciliation and the modelops CLI."""

"""Local mode: a ModelDeployment run as processes on this machine (`modelops local up`)."""

"""modelops load generator: open-loop rate control, honest latency, seed payloads, metrics"""

__version__ = "0.1.0"

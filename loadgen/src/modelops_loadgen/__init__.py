"""modelops load generator: open-loop rate control, honest latency, seed payloads, metrics"""

"""Deployment: an HTTP service with micro-batching and metrics; ONNX export, int8, head pruning."""

"""Inference: ONNX Runtime sessions and the two shipped model kinds."""

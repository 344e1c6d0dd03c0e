"""Fraud model: training over the engine's online features, and ONNX export."""

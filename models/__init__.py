"""Offline model code for Streamer: training, evaluation and ONNX export of the models the runtime serves.

Nothing in this package is imported by the runtime (``streamer/``); the runtime only reads the exported
artefacts (ONNX graphs and their ``manifest.json``) under ``models/shipped/``.
"""

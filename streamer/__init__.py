"""Streamer: real-time fraud scoring and next-item ranking over Kafka.

The flow of an event, and the package that handles each step::

    Kafka topic ─► worker/ (Faust agent) ─► events (decode, validate)
        ─► state/ (one Redis round trip) ─► features/ ─► inference/ (ONNX Runtime)
        ─► state/ (one Redis round trip) ─► output/ (publish, dead-letter)

``pipeline/`` ties the steps together as plain classes that know nothing of Faust,
so the same code runs in the worker, over a replay file and in unit tests.
"""

__version__ = "0.1.0"

"""Pipelines: decode → state read → features → inference → state write → outputs.

Plain async classes over ``SourceRecord`` batches that return ``OutputRecord`` lists;
nothing here imports Faust or a Kafka client. The transaction and click pipelines also
split ``process`` in two steps (``prepare``, then the step it returns: the state the next
batch reads is written in the first, the models run in the second), which a worker
overlaps across batches (``streamer.worker.batching``).
"""

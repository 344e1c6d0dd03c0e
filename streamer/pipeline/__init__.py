"""Pipelines: decode → state read → features → inference → state write → outputs.

Plain async classes over ``SourceRecord`` batches that return ``OutputRecord`` lists;
nothing here imports Faust or a Kafka client. The transaction and click pipelines also
split ``process`` in three steps (``prepare``, then the step it returns, then the one
that returns: the state the next batch reads is written in the first, the models run in
the second, the rest is written and the outputs made in the third), which a worker
overlaps across batches (``streamer.worker.batching``).
"""

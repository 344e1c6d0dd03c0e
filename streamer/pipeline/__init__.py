"""Pipelines: decode → state read → features → inference → state write → outputs.

Plain async classes over ``SourceRecord`` batches that return ``OutputRecord`` lists;
nothing here imports Faust or a Kafka client.
"""

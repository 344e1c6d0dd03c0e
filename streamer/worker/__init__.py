"""The Faust worker: thin agents that feed Kafka batches to the pipelines."""

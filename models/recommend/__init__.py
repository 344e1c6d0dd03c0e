"""Next-item recommender: a small transformer over the user's item sequence.

Modules:

* :mod:`models.recommend.data` -- read the sequence file, leave-one-out splits, batching (numpy only).
* :mod:`models.recommend.model` -- the torch model (a ``transformers`` BertModel built from a config).
* :mod:`models.recommend.losses` -- next-item losses: full softmax, SASRec's sampled binary cross-entropy.
* :mod:`models.recommend.train` -- masked-item pre-training, next-item fine-tuning, export, manifest.
* :mod:`models.recommend.export` -- ONNX export of ``encoder.onnx`` and ``ranker.onnx``.
* :mod:`models.recommend.check` -- ONNX Runtime vs torch agreement check.
* :mod:`models.recommend.evaluate` -- offline HR@10 / NDCG@10 of an exported model with ONNX Runtime only.

Only ``data`` and ``evaluate`` are importable without torch.
"""

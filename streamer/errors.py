"""The project's exceptions, one small tree.

::

    StreamerError
    ├── ConfigurationError     bad settings or model files; retrying cannot help
    ├── InvalidEvent           an input message that cannot be used; goes to dead-letter
    └── DependencyError        Kafka, Redis or a child process misbehaved; a retry may help

``retriable`` says whether repeating the same operation can succeed.
"""

from __future__ import annotations


class StreamerError(Exception):
    retriable = False


class ConfigurationError(StreamerError):
    """Settings, model directories or manifests are wrong."""


class InvalidEvent(StreamerError):
    """A message failed decoding or validation. ``reason`` is a short machine tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[InvalidEvent], tuple[str, str]]:
        """Pickled with its own arguments: the next-item model process sends its errors back."""
        return type(self), (self.reason, self.detail)


class DependencyError(StreamerError):
    """An outside system (broker, Redis, a child process) failed."""

    retriable = True

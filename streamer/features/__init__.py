"""Feature computation: pure functions over state read for a micro-batch."""

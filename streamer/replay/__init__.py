"""Capture and replay of topics: the file format, capture, replay, importers, offline runs."""

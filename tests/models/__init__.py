"""Tests of the offline model code under models/ (training, export, offline evaluation)."""

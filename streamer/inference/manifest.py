"""Reading an exported model directory: ``manifest.json`` beside its ONNX files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from streamer.errors import ConfigurationError


def load_manifest(model_dir: Path, expected_name: str) -> dict[str, Any]:
    path = model_dir / "manifest.json"
    if not path.is_file():
        raise ConfigurationError(f"{model_dir} is not an exported model: no manifest.json")
    manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    if manifest.get("name") != expected_name:
        raise ConfigurationError(f"{path} is a {manifest.get('name')!r} model, not {expected_name!r}")
    return manifest

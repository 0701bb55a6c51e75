"""YAML file -> DaemonConfig, with errors that name the file, the line, the path and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from camingest.config import DaemonConfig
from camingest.errors import ConfigError

Loc = tuple[str | int, ...]
INHERITED = ("fps", "slots", "pixel_format")


def load_config(path: str | Path) -> DaemonConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<config>") -> DaemonConfig:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping at the top, got {_kind(data)}"])
    merged = merge_defaults(data)
    try:
        return DaemonConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError([_describe(err, node, source) for err in exc.errors()]) from exc


def merge_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill each stream from `defaults` (encoder merged key by key). The one place it happens.

    `defaults` stays in the document so that pydantic validates it like any other section."""
    defaults, streams = data.get("defaults"), data.get("streams")
    if not isinstance(defaults, dict) or not isinstance(streams, list):
        return data
    return data | {"streams": [_merge_stream(defaults, s) for s in streams]}


def _merge_stream(defaults: dict[str, Any], stream: Any) -> Any:
    if not isinstance(stream, dict):
        return stream
    merged = {k: defaults[k] for k in INHERITED if k in defaults} | stream
    enc_default, enc_stream = defaults.get("encoder", {}), stream.get("encoder", {})
    if isinstance(enc_default, dict) and isinstance(enc_stream, dict):
        merged["encoder"] = enc_default | enc_stream
    return merged


def _describe(err: Any, node: yaml.Node | None, source: str) -> str:
    loc: Loc = tuple(err["loc"])
    # pydantic appends the union member or validator name for some errors; drop non-keys.
    path = format_path(loc)
    line = _line_of(node, loc)
    where = f"{source}:{line}" if line else source
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif err["type"] in ("enum", "literal_error"):
        expected = (err.get("ctx") or {}).get("expected")
        msg = f"{err.get('input')!r} is not allowed; allowed: {expected}"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return f"{where}: {path or '(top)'}: {msg}"


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the deepest node on `loc` that exists in the document."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    best = key.start_mark.line + 1
                    node = value
                    break
            else:
                return best
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return best
            node = node.value[part]
            best = node.start_mark.line + 1
        else:
            return best
    return best


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__

"""YAML file -> DaemonConfig, with errors naming the file, the line, the path and what is allowed.

Every problem becomes one line: `camingest.yaml:12: streams[1].encoder.codec: 'h266' is not
allowed; allowed: h264, h265`.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from camingest.config.model import CROSS_FIELD, PATTERN_WORDS, DaemonConfig, DefaultsConfig, Loc
from camingest.config.yaml_graph import check_node_graph
from camingest.errors import ConfigError

# Stream keys a `defaults:` section may set; `encoder` is merged key by key on top of these.
INHERITED = ("fps", "slots", "pixel_format", "on_full", "max_wait_ms")
UNKNOWN = "unknown key"
MISSING = "required key is missing"
TOP_KEYS_HINT = "keys such as runtime_dir, output, defaults and streams"


def load_config(path: str | Path) -> DaemonConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from exc
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<config>") -> DaemonConfig:
    node, data = _parse_yaml(text, source)
    defaults = data.get("defaults")
    merged = merge_defaults(data, exclude=_invalid_defaults(defaults))
    try:
        return DaemonConfig.model_validate(merged)
    except ValidationError as exc:
        problems = _drop_misspelt_missing(
            [p for err in exc.errors(include_url=False) for p in _problems(err)]
        )
        lines: list[tuple[int, str]] = []
        for loc, msg in problems:
            line = _line_of(node, loc)
            text_line = _format(source, line, loc, msg + _inherited_note(node, data, loc))
            if text_line not in (t for _, t in lines):
                lines.append((line or 0, text_line))
        lines.sort(key=lambda pair: pair[0])
        raise ConfigError([t for _, t in lines]) from exc


def _drop_misspelt_missing(problems: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    """`heigth: 240` gives "height is missing" and "unknown key heigth": keep only the second,
    which already says "did you mean 'height'?"."""
    unknown = {loc for loc, msg in problems if msg.startswith(UNKNOWN)}
    out = []
    for loc, msg in problems:
        if msg.startswith(MISSING) and any(
            u[:-1] == loc[:-1] and difflib.get_close_matches(str(loc[-1]), [str(u[-1])], n=1)
            for u in unknown
        ):
            continue
        out.append((loc, msg))
    return out


def merge_defaults(data: dict[str, Any], exclude: frozenset[Loc] = frozenset()) -> dict[str, Any]:
    """Fill each stream from `defaults` (encoder merged key by key). The one place it happens.

    `defaults` stays in the document so that pydantic validates it, and reports its errors at
    `defaults.<key>`; keys listed in `exclude` (invalid there) are not copied into the streams,
    so the same mistake is not reported once more per stream."""
    defaults, streams = data.get("defaults"), data.get("streams")
    if not isinstance(defaults, dict) or not isinstance(streams, list):
        return data
    inherited = {k: defaults[k] for k in INHERITED if k in defaults and (k,) not in exclude}
    enc = defaults.get("encoder", {})
    enc_default = (
        {k: v for k, v in enc.items() if ("encoder", k) not in exclude}
        if isinstance(enc, dict) and ("encoder",) not in exclude
        else {}
    )
    return data | {"streams": [_merge_stream(inherited, enc_default, s) for s in streams]}


def _merge_stream(inherited: dict[str, Any], enc_default: dict[str, Any], stream: Any) -> Any:
    if not isinstance(stream, dict):
        return stream
    merged = inherited | stream
    enc_stream = stream.get("encoder", {})
    if isinstance(enc_stream, dict) and (enc_default or "encoder" in stream):
        merged["encoder"] = enc_default | enc_stream
    return merged


def _invalid_defaults(defaults: Any) -> frozenset[Loc]:
    """Paths (relative to `defaults`) of the keys that are wrong in the section itself."""
    if not isinstance(defaults, dict):
        return frozenset()
    try:
        DefaultsConfig.model_validate(defaults)
    except ValidationError as exc:
        bad: set[Loc] = set()
        for err in exc.errors(include_url=False):
            for loc, _ in _problems(err):
                bad.add(tuple(loc[:2]) if loc[:1] == ("encoder",) else tuple(loc[:1]))
        return frozenset(bad)
    return frozenset()


def _parse_yaml(text: str, source: str) -> tuple[yaml.Node, dict[str, Any]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(
                [f"{source}: the file is empty; expected a mapping with {TOP_KEYS_HINT}"]
            )
        check_node_graph(node, source)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):  # "expected a single document ..., but"
            problem = f"{context}, {problem}"
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from exc
    except RecursionError as exc:  # PyYAML's composer recurses once per nesting level
        raise ConfigError([f"{source}: nested too deeply to be a camingest config"]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"{source}:{node.start_mark.line + 1}: expected a mapping at the top "
                f"({TOP_KEYS_HINT}), got {_kind(data)}"
            ]
        )
    return node, data


# ---------------------------------------------------------------------------------------------
# pydantic error -> (path, message)


def _problems(err: Any) -> list[tuple[Loc, str]]:
    loc: Loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if err["type"] == CROSS_FIELD:
        return [(loc + tuple(at), msg) for at, msg in ctx["problems"]]
    if err["type"] == "invalid_key":  # `1: x`: YAML made the key a number
        loc = (*loc[:-1], str(loc[-1]))
        return [(loc, _unknown_key(loc))]
    return [(loc, _message(err, loc, ctx))]


def _message(err: Any, loc: Loc, ctx: dict[str, Any]) -> str:
    kind, value = err["type"], err.get("input")
    field = _field_at(loc)
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        what = _allowed(field)
        return MISSING + (f"; allowed: {what}" if what else "")
    if kind in ("enum", "literal_error"):
        choices = _choices(str(ctx.get("expected", "")))
        return f"{_show(value)} is not allowed; allowed: {choices}"
    if kind in (
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
    ):
        return f"{_show(value)} is out of range; allowed: {_allowed(field) or _bound(kind, ctx)}"
    if kind in ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing"):
        noun = "an integer" if kind.startswith("int") else "a number"
        return f"{_show(value)} is not {noun}; allowed: {_allowed(field) or noun}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{_show(value)} is not a boolean; allowed: true, false"
    if kind == "string_type":
        note = " (YAML reads yes/no/on/off as booleans: put the value in quotes)"
        return f"{_show(value)} is not a string" + (note if isinstance(value, bool) else "")
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        words = PATTERN_WORDS.get(pattern, f"text matching {pattern}")
        return f"{_show(value)} is not allowed; allowed: {words}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {_kind(value)}; write [a, b] or one '- item' per line"
    if kind in ("path_type", "path_parsing"):
        return f"{_show(value)} is not a path; allowed: an absolute path"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value lines), got {_kind(value)}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return str(err["msg"])


def _unknown_key(loc: Loc) -> str:
    key = loc[-1]
    model = _model_at(loc[:-1])
    if model is None:
        return f"{UNKNOWN} {key!r}"
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{UNKNOWN} {key!r}{hint}; allowed: {', '.join(known)}"


def _choices(expected: str) -> str:
    # pydantic writes "'h264' or 'h265'" / "'a', 'b' or 'c'".
    parts = [p.strip().strip("'") for p in expected.replace(" or ", ", ").split(",")]
    return ", ".join(p for p in parts if p)


def _bound(kind: str, ctx: dict[str, Any]) -> str:
    words = {"greater_than": "above", "greater_than_equal": "at least", "less_than": "below"}
    for key in ("gt", "ge", "lt", "le"):
        if key in ctx:
            return f"{words.get(kind, 'at most')} {ctx[key]}"
    return "a finite number"


def _allowed(field: FieldInfo | None) -> str:
    """What a field takes, in words: 'an integer from 16 to 8192', 'a number above 0 and at
    most 240', or the field's description."""
    if field is None:
        return ""
    low = high = ""
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = f"from {meta.ge}"
        elif isinstance(meta, annotated_types.Gt):
            low = f"above {meta.gt}"
        elif isinstance(meta, annotated_types.Le):
            high = f"to {meta.le}" if low.startswith("from") else f"at most {meta.le}"
        elif isinstance(meta, annotated_types.Lt):
            high = f"below {meta.lt}"
    if not (low or high):
        return field.description or ""
    noun = "an integer" if _unwrap(field.annotation) is int else "a number"
    joiner = " " if low.startswith("from") and high.startswith("to") else " and "
    return f"{noun} {joiner.join(p for p in (low, high) if p)}".replace("  ", " ")


def _unwrap(annotation: Any) -> Any:
    """The model or plain type under Optional/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _walk(loc: Loc) -> tuple[Any, FieldInfo | None]:
    """The type at `loc` in DaemonConfig, and the field it belongs to."""
    current: Any = DaemonConfig
    field: FieldInfo | None = None
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(part, str) and isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return None, None
            current = field.annotation
        elif isinstance(part, int) and origin in (tuple, list):
            current, field = typing.get_args(current)[0], None
        else:
            return None, None
    return _unwrap(current), field


def _field_at(loc: Loc) -> FieldInfo | None:
    return _walk(loc)[1]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    current = _walk(loc)[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


# ---------------------------------------------------------------------------------------------
# Paths and lines


def _format(source: str, line: int | None, loc: Loc, msg: str) -> str:
    where = f"{source}:{line}" if line else source
    path = format_path(loc)
    return f"{where}: {path}: {msg}" if path else f"{where}: {msg}"


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _find(node: yaml.Node | None, loc: Loc) -> tuple[yaml.Node | None, int | None, bool]:
    """(node reached, 1-based line of the deepest part of `loc` found, whether all was found)."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if key.value == part:
                    best, node = key.start_mark.line + 1, value
                    break
            else:
                return node, best, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node, best, False
            node = node.value[part]
            best = node.start_mark.line + 1
        else:
            return node, best, False
    return node, best, True


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the deepest node on `loc` that exists in the document."""
    return _find(node, loc)[1]


def _inherited_note(node: yaml.Node, data: dict[str, Any], loc: Loc) -> str:
    """' (inherited from defaults.x, line N)' for a stream value the stream did not write."""
    if len(loc) < 3 or loc[0] != "streams" or not isinstance(loc[1], int):
        return ""
    rest = loc[2:] if loc[2] != "encoder" else loc[2:4]
    if _find(node, loc[:2] + rest)[2]:
        return ""
    _, line, found = _find(node, ("defaults", *rest))
    if not found or not isinstance(data.get("defaults"), dict):
        return ""
    return f" (inherited from defaults.{format_path(rest)}, line {line})"


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict | list):
        return _kind(value)
    return str(value)


def _kind(value: Any) -> str:
    """'a mapping', 'a list', 'a string', ... for messages."""
    if value is None:
        return "nothing"
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        bool: "a boolean",
    }
    return names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)


def line_of(text: str, loc: Loc) -> int | None:
    """The 1-based line in YAML `text` of the deepest part of `loc` present (for messages
    about a loaded config, e.g. from preflight)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    return _line_of(node, loc) if node is not None else None

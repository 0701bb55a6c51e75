"""The node graph of a composed YAML document, checked before anything expands it.

Aliases make the node tree a graph. A recursive alias (`a: &a [*a]`) makes anything that walks
the constructed data loop forever, and nested aliases (nine levels of nine) expand a few
hundred bytes into 9^9 values: both would hang `camingest check` and freeze a reload. Each
distinct node is visited once here, and the number of values the document expands to is
counted without expanding it.
"""

from __future__ import annotations

import yaml

from camingest.errors import ConfigError

# A large config has a few thousand values; aliases must not multiply that.
MAX_NODES = 100_000


def check_node_graph(root: yaml.Node, source: str) -> None:
    """Refuse recursive aliases and alias bombs before anything expands the document, and
    duplicate keys (PyYAML keeps the last of two equal keys silently; a config must not).

    Aliases make the node tree a graph: each distinct node is visited once, and the number of
    nodes the document expands to is counted without expanding it."""
    expanded: dict[int, int] = {}  # id(node) -> nodes it stands for once aliases are expanded
    on_path: set[int] = set()
    duplicates: list[tuple[int, str]] = []
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = _children(node)
        if finished:
            on_path.discard(id(node))
            size = 1 + sum(expanded[id(c)] for c in children)
            if size > MAX_NODES:
                raise ConfigError(
                    [
                        f"{source}:{node.start_mark.line + 1}: the document expands to more "
                        f"than {MAX_NODES} values through its aliases; refusing it (an alias "
                        "bomb?)"
                    ]
                )
            expanded[id(node)] = size
            continue
        if id(node) in expanded:
            continue
        on_path.add(id(node))
        if isinstance(node, yaml.MappingNode):
            duplicates += _duplicate_keys(node, source)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise ConfigError(
                    [
                        f"{source}:{child.start_mark.line + 1}: a recursive alias: this value "
                        "contains itself"
                    ]
                )
            if id(child) not in expanded:
                stack.append((child, False))
    if duplicates:
        raise ConfigError([text for _, text in sorted(duplicates)])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _duplicate_keys(node: yaml.MappingNode, source: str) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode):
            line = key.start_mark.line + 1
            if key.value in first:
                problems.append(
                    (
                        line,
                        f"{source}:{line}: duplicate key {key.value!r} "
                        f"(first at line {first[key.value]})",
                    )
                )
            first.setdefault(key.value, line)
    return problems

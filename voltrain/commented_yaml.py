"""Write a config mapping as YAML with a comment above chosen keys (``voltrain init``).

PyYAML drops comments, so this writer lays out the few shapes an experiment config has:
mappings, lists of mappings, and scalars or lists of scalars (written inline, as
``[1, 3, 3]``). Comments are keyed by dotted path (``trainer.input_shape``); entries of a
list share their list's path (``trainer.augments.elastic`` for the entry of that type).
"""

from __future__ import annotations

from typing import Any

import yaml

INDENT = "  "


def commented_yaml(data: dict[str, Any], comments: dict[str, str], header: str = "") -> str:
    """The YAML text of ``data`` with ``comments[path]`` as ``#`` lines above each key."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _mapping(data, "", 0, comments, lines)
    return "\n".join(lines) + "\n"


def _mapping(data: dict, path: str, depth: int, comments: dict, lines: list[str]) -> None:
    pad = INDENT * depth
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else key
        lines.extend(f"{pad}# {line}".rstrip() for line in comments.get(key_path, "").splitlines())
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            _mapping(value, key_path, depth + 1, comments, lines)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for entry in value:
                _list_entry(entry, key_path, depth + 1, comments, lines)
        else:
            lines.append(f"{pad}{key}: {_inline(value)}")


def _list_entry(entry: dict, path: str, depth: int, comments: dict, lines: list[str]) -> None:
    """One mapping of a list, written as ``- key: value`` with the rest indented below."""
    pad = INDENT * depth
    entry_path = f"{path}.{entry['type']}" if "type" in entry else path
    lines.extend(f"{pad}# {line}".rstrip() for line in comments.get(entry_path, "").splitlines())
    nested: list[str] = []
    _mapping(entry, entry_path, depth + 1, comments, nested)
    first = nested[0][len(INDENT * (depth + 1)) :]
    lines.append(f"{pad}- {first}")
    lines.extend(nested[1:])


def _inline(value: Any) -> str:
    """A scalar or a (nested) list of scalars in YAML's inline form."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix(" ...").strip()

"""Turn a pydantic ``ValidationError`` into one line per problem, in the YAML's own words.

Each line names the full key as the user wrote it (``trainer.augments[1].jitter_sigma``,
with list indices and without the discriminated union's tag that pydantic puts in the
path), says what is expected, and shows the offending value once. pydantic's own
``Value error,`` prefix is dropped: a validator's message is the user-facing text.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from voltrain.registry import TYPE_ERROR

MAX_SHOWN_VALUE = 60
"""Values whose repr is longer than this are not repeated in the message."""


def validation_problems(error: ValidationError, data: Any) -> list[str]:
    """Every problem of ``error`` as ``key: message``, in the order pydantic found them."""
    lines = []
    for entry in error.errors():
        line = f"{config_key(entry['loc'], data)}: {problem_message(entry)}"
        if line not in lines:  # a value failing two union members is reported once
            lines.append(line)
    return lines


def config_key(location: tuple, data: Any) -> str:
    """The YAML key path of a pydantic error location, e.g. ``trainer.augments[0].p``.

    ``data`` is the mapping that was validated: walking it tells list indices from keys and
    finds the union tags (``gunpowder`` in ``trainer.gunpowder.batch_size``) to leave out.
    """
    parts: list[str] = []
    current = data
    for position, element in enumerate(location):
        last = position == len(location) - 1
        if isinstance(element, int) and isinstance(current, list):
            parts.append(f"[{element}]")
            current = current[element] if element < len(current) else None
            continue
        if isinstance(current, dict) and element not in current and not last:
            # a key absent from the file with more path after it is a union tag (the
            # section's ``type``, written or defaulted), not something the user wrote
            continue
        parts.append(f".{element}" if parts else str(element))
        current = current.get(element) if isinstance(current, dict) else None
    return "".join(parts) or "config"


def problem_message(entry: dict[str, Any]) -> str:
    """What is wrong and what is expected, with the value shown once."""
    kind = entry["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_not_found":
        return "missing 'type', which selects the kind of section"
    context = entry.get("ctx") or {}
    if kind == "union_tag_invalid":
        return f"unknown type '{context['tag']}' (known types: {context['expected_tags']})"
    own_text = kind in ("value_error", "assertion_error") and "error" in context
    message = str(context["error"]) if own_text else entry["msg"]
    if message.startswith("Input should be "):
        message = "expected " + message[len("Input should be ") :]
    if "input" not in entry or kind.startswith("union_tag") or kind == TYPE_ERROR:
        return message
    shown = repr(entry["input"])
    # validators' own messages usually show the value already ("..., got [0, 1]")
    already_shown = "got " in message or (own_text and shown in message)
    if len(shown) > MAX_SHOWN_VALUE or already_shown:
        return message
    return f"{message}, got {shown}"


def describe_problems(source: str, problems: list[str]) -> str:
    """One problem as one line; several as a headline and one indented line each."""
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    listed = "\n".join(f"  {problem}" for problem in problems)
    return f"{source}: {len(problems)} problems:\n{listed}"

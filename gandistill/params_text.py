"""The params' text layer: YAML that refuses duplicate keys, and `--set section.key=value`
overrides applied to a params tree (gandistill.config validates what they produce)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from gandistill.errors import ConfigError


def _duplicate_keys(node: yaml.Node, path: str = "") -> list[str]:
    """Every key that a YAML mapping (at any depth) holds twice, with both line numbers: PyYAML
    keeps the last silently, so a second `distill:` section would replace the first whole."""
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in first_line:
                found.append(f"  {path}{key}: given twice (lines {first_line[key]} and {line})")
            elif key is not None:
                first_line[key] = line
            found += _duplicate_keys(value_node, f"{path}{key}.")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item, path)
    return found


def load_yaml(text: str, source: str) -> Any:
    """YAML that refuses duplicate keys (a ConfigError listing each with its line numbers)."""
    try:
        duplicates = _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        if duplicates:
            raise ConfigError(f"{source} gives {'a key' if len(duplicates) == 1 else 'keys'} twice (the second "
                              "would silently replace the first):\n" + "\n".join(duplicates)
                              + "\nKeep one of each: merge repeated sections into one.")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line with its line and column (its own text names the source
    "<unicode string>" and prints the offending lines, which the message names already)."""
    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return str(exc)
    problem = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    context, at = exc.context, exc.context_mark
    if context and at is not None:
        problem += f" ({context} at line {at.line + 1}, column {at.column + 1})"
    return problem


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_SET_RE = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)=(.*)$", re.S)


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (1e-3, true, [1,2])."""
    match = _SET_RE.match(assignment)
    if not match:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value, e.g. --set teacher.epochs=3")
    path, value_text = match.groups()
    value = load_yaml(value_text, f"--set {assignment!r}: the value") if value_text.strip() else None
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" as a string; users mean the number
    node = tree
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value

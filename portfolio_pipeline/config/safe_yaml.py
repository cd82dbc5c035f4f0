"""One safe YAML reader for every configuration file.

``yaml.safe_load`` is safe against code execution but not against input that makes
the loader itself fail with a Python exception or exhaust memory: non-UTF-8 bytes,
``2018-02-30`` (resolved as a timestamp), ``!!int x``, a 5,000-digit integer (Python's
int-string limit), ``!!bool maybe``, ``? [a, b]`` (an unhashable key), nesting deep
enough for a RecursionError, alias bombs, a 50 MB file.  :func:`load_yaml_text` turns
each of those into a :class:`YamlProblem` naming the line and what is wrong, and
enforces limits:

- file size (:data:`MAX_BYTES`), checked before reading;
- nesting depth (:data:`MAX_DEPTH`) and expanded node count (:data:`MAX_NODES`, aliases
  counted at their expanded size), checked on the event stream before anything is
  composed (PyYAML's composer and constructor recurse);
- length of a plain scalar (:data:`MAX_SCALAR_CHARS`) and of an integer
  (:data:`MAX_INT_DIGITS`);
- duplicate mapping keys are errors (plain YAML silently keeps the last one).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_NODES",
    "MAX_SCALAR_CHARS",
    "YamlProblem",
    "load_yaml_file",
    "load_yaml_text",
]

MAX_BYTES: Final = 1 << 20
"""Largest configuration file accepted (1 MiB; the shipped files are a few KiB)."""
MAX_DEPTH: Final = 32
MAX_NODES: Final = 100_000
MAX_SCALAR_CHARS: Final = 10_000
MAX_INT_DIGITS: Final = 100


@dataclass(frozen=True, slots=True)
class YamlProblem(Exception):
    """What is wrong with a YAML document and where (``line L, column C`` or empty)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose constructors report bad values as ConstructorError with a mark."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError, IndexError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid {_tag_name(node)} value {_short(node)} ({_reason(exc)})",
                node.start_mark,
            ) from None


def _tag_name(node: yaml.Node) -> str:
    tag = str(node.tag or "")
    return tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


def _short(node: yaml.Node) -> str:
    value = node.value if isinstance(node, yaml.ScalarNode) else "..."
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return "not a recognised value"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if len(text.replace("_", "").lstrip("+-")) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"integer with more than {MAX_INT_DIGITS} digits", node.start_mark
        )
    return int(yaml.SafeLoader.construct_yaml_int(loader, node))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
    loader.flatten_mapping(node)
    result: dict[Hashable, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value (a list or mapping was given)",
                key_node.start_mark,
            ) from None
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_events(text: str) -> None:
    """Depth, node count (aliases expanded) and scalar length, before composing."""
    depth = 0
    frames: list[list[Any]] = []  # [anchor, expanded count]
    sizes: dict[str, int] = {}
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            size = sizes.get(str(event.anchor), 1)
        elif isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR_CHARS:
                raise YamlProblem(_at(event.start_mark),
                                  f"value longer than {MAX_SCALAR_CHARS} characters")
            size = 1
            if event.anchor is not None:
                sizes[str(event.anchor)] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(_at(event.start_mark), f"nested deeper than {MAX_DEPTH} levels")
            frames.append([event.anchor, 1])
            continue
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, size = frames.pop()
            if anchor is not None:
                sizes[str(anchor)] = size
        else:
            continue
        total += size
        if total > MAX_NODES:
            raise YamlProblem(_at(event.start_mark),
                              f"more than {MAX_NODES} values (aliases counted expanded)")
        if frames:
            frames[-1][1] += size
            if frames[-1][1] > MAX_NODES:
                raise YamlProblem(_at(event.start_mark),
                                  f"more than {MAX_NODES} values (aliases counted expanded)")


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document; raise :class:`YamlProblem` for anything wrong with it."""
    try:
        _check_events(text)
        return yaml.load(text, Loader=_Loader)
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(_at(mark), f"invalid YAML: {problem}") from None
    except (ValueError, TypeError, KeyError, OverflowError, AttributeError, IndexError,
            RecursionError) as exc:
        raise YamlProblem("", f"invalid YAML: {_reason(exc)}") from None


def load_yaml_file(path: Path, *, max_bytes: int = MAX_BYTES) -> Any:
    """Read ``path`` (UTF-8, at most ``max_bytes``) and parse it with :func:`load_yaml_text`."""
    try:
        if path.is_dir():
            raise YamlProblem("", "is a directory, expected a YAML file")
        size = path.stat().st_size
        if size > max_bytes:
            raise YamlProblem("", f"file is {size:,} bytes, larger than the {max_bytes:,} allowed")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YamlProblem("", "file not found") from None
    except OSError as exc:
        raise YamlProblem("", f"cannot read the file ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise YamlProblem("", f"file is larger than the {max_bytes:,} bytes allowed")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblem(f"line {line}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise YamlProblem(f"line {line}", "contains a NUL character")
    return load_yaml_text(text)

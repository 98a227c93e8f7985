"""Reading YAML/JSON files a human handed us, with limits: size, UTF-8, nesting depth, aliases.

Why: ``yaml.safe_load`` is safe against code execution but not against hostile shapes. A 5,000-deep JSON
array makes PyYAML's recursive composer die with ``RecursionError``; a few lines of anchors and aliases
("billion laughs") expand to gigabytes once the result is walked or printed; ``/dev/zero`` as a config file
never ends; a Latin-1 file raises ``UnicodeDecodeError``. Every one of those must be one line naming the
file's setting (``config``, ``--pvc`` …), never a traceback. So a document is read with a size cap,
decoded strictly, scanned once with PyYAML's event parser (iterative: it cannot overflow the stack) to
bound depth and aliases, and only then composed. PyYAML types plain scalars the YAML 1.1 way, which is
what lets the settings tell ``3.50`` (a float: refused with a hint to quote it) from ``"3.50"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from provisioner.domain.errors import ConfigError

#: Larger files are refused: no configuration, clouds.yaml or Kubernetes object is anywhere near this.
MAX_BYTES: Final = 4 << 20
#: Deeper nesting is refused (Kubernetes objects nest about 10 deep; PyYAML recurses per level).
MAX_DEPTH: Final = 64
#: Documents that would expand (aliases followed) to more nodes than this are refused.
MAX_NODES: Final = 1_000_000


class DocumentError(ValueError):
    """A file could not be read or parsed; ``str()`` is one line without the file's content."""


def shown_key(key: object) -> str:
    """A mapping key as it may appear in a field name: plain if it is short printable text, else quoted.

    Keys come from the file, so a key holding a newline must not split the one-line error in two.
    """
    text = str(key)
    if text and len(text) <= 64 and text.isprintable() and not any(c.isspace() for c in text):
        return text
    return ascii(text if len(text) <= 40 else text[:37] + "...")


def read_text(path: Path | str, *, max_bytes: int = MAX_BYTES) -> str:
    """The file's text: at most ``max_bytes`` bytes, strict UTF-8; ``DocumentError`` otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise DocumentError(f"cannot read {str(path)!r}: {e.strerror or type(e).__name__}") from None
    if len(data) > max_bytes:
        raise DocumentError(f"{str(path)!r} is larger than {max_bytes >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(f"{str(path)!r} is not UTF-8 text (invalid byte at offset {e.start})") from None


def load_yaml(text: str, *, source: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """The document in ``text`` (YAML or JSON); ``DocumentError`` naming ``source`` and the line."""
    try:
        _check_shape(text, source=source, max_depth=max_depth, max_nodes=max_nodes)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DocumentError(f"{source} is not valid YAML/JSON{_where(e)}: {_problem(e)}") from None
    except RecursionError:  # cannot happen after _check_shape; kept so no traceback ever escapes
        raise DocumentError(f"{source} nests too deeply") from None


def load_file(path: Path | str, *, field: str) -> Any:
    """Read and parse a file for the setting ``field``; ``ConfigError(field)`` on any problem."""
    try:
        return load_yaml(read_text(path), source=str(path))
    except DocumentError as e:
        raise ConfigError(field, str(e)) from None


def _check_shape(text: str, *, source: str, max_depth: int, max_nodes: int) -> None:
    """Walk the event stream once: depth, documents, and the size the document has with aliases expanded."""
    sizes: dict[str, int] = {}  # anchor → expanded node count of what it names
    open_: list[tuple[int, str | None]] = []  # per open collection: expanded count at its start, anchor
    expanded = documents = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise DocumentError(f"{source} holds more than one YAML document")
        elif isinstance(event, yaml.CollectionStartEvent):
            open_.append((expanded, event.anchor))
            expanded += 1
            if len(open_) > max_depth:
                raise DocumentError(f"{source} nests deeper than {max_depth} levels{_at(event)}")
        elif isinstance(event, yaml.CollectionEndEvent):
            began, anchor = open_.pop()
            if anchor is not None:
                sizes[anchor] = expanded - began
        elif isinstance(event, yaml.ScalarEvent):
            expanded += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:  # undefined, or names a collection still open: recursive
                raise DocumentError(f"{source} has a recursive or undefined YAML alias{_at(event)}")
            expanded += sizes[event.anchor]
        if expanded > max_nodes:
            raise DocumentError(f"{source} expands to more than {max_nodes:,} nodes (YAML aliases)")


def _at(event: yaml.Event) -> str:
    mark = event.start_mark
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"


def _where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"


def _problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or "syntax error"
    return " ".join(str(problem).split())

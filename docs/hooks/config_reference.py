"""mkdocs hook: the configuration reference (docs/reference/config.md), generated from the suite's pydantic models.

The page holds the marker ``<!-- config-reference -->``; this hook replaces it, at every build, with one table per
section of :class:`bench.config.Suite` (nested pydantic models, recursively): key, type, default, description.
Task tables come from the ``tasks`` section of the schema and, for any task the schema does not list, from
``bench.tasks.TASKS[name]``'s config model. Nothing here is written by hand, so the page cannot drift from the
schema.

Only pydantic v2's public API is used (``model_fields``, ``FieldInfo.annotation``, ``.default``,
``.default_factory``, ``.description``, ``.metadata``, ``is_required()``). A field's description is its
``description`` when set; else the attribute docstring after it (a string literal on the next line); else the
comment on its own line(s) of the source, the comment lines directly above it, and, when that line is full, the
comment lines that continue it; else empty. A section's introduction is its class's own docstring.
"""

from __future__ import annotations

import ast
import collections.abc
import html
import importlib.util
import inspect
import io
import logging
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

MARKER = "<!-- config-reference -->"
PAGE = "reference/config.md"
# a trailing comment that ends mid-sentence on a line at least this long was wrapped onto the comment lines below
# it (ruff's line length is 120)
FULL_LINE = 95

log = logging.getLogger("mkdocs.hooks.config_reference")


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        log.warning("%s: the marker %s is missing; the configuration reference was not generated", PAGE, MARKER)
        return markdown
    try:
        reference = render_reference()
    except Exception as exc:  # the build must say so, not publish an empty reference
        log.warning("%s: could not generate the configuration reference: %s: %s", PAGE, type(exc).__name__, exc)
        reference = f'!!! failure "Not generated"\n    `from bench.config import Suite` failed: `{exc}`\n'
    return markdown.replace(MARKER, reference)


# -- the page --------------------------------------------------------------------------------------------------


def render_reference() -> str:
    if importlib.util.find_spec("bench") is None:  # not installed: the repository's own copy
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.config import Suite

    sections: list[tuple[str, type, Any]] = []  # (dotted path, model class, instance holding the defaults)
    _collect(Suite, "", None, sections)
    sections.sort(key=lambda section: section[0].split(".")[0] == "tasks")  # the long task tables last (stable)
    done = {path for path, _, _ in sections}
    out = [_section(path, model, values, _task_classes()) for path, model, values in sections]

    # One table per registered protocol ([linear], ...) and its search space ([tuning.space.linear], ...): the
    # suite validates them through bench.registry.PROTOCOLS, so they are not fields of the Suite model
    from bench.registry import PROTOCOLS

    for name in PROTOCOLS.names():
        protocol, found = PROTOCOLS[name], []
        _collect(protocol.Config, name, None, found)
        if protocol.Space is not None:
            _collect(protocol.Space, f"tuning.space.{name}", None, found)
        out.extend(_section(path, m, v, _task_classes()) for path, m, v in found)

    # Task configs the schema does not list (a registry may be richer than a suite's ``tasks`` table)
    extra = []
    try:
        for name, task in _task_classes().items():
            model = _task_config(task)
            if model is None or f"tasks.{name}" in done:
                continue
            found: list[tuple[str, type, Any]] = []
            _collect(model, f"tasks.{name}", None, found)
            extra.extend(_section(path, m, v, _task_classes()) for path, m, v in found)
    except (ImportError, AttributeError, TypeError, KeyError) as exc:
        log.info("task configs from bench.tasks.TASKS not rendered: %s", exc)
    return "\n".join(out + extra)


def _collect(model: type, path: str, values: Any, sections: list) -> None:
    """Depth-first: the section itself, then every field whose type is a model (``X`` or ``X | None``)."""
    sections.append((path, model, values))
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is None:
            continue
        default = getattr(values, name, None) if values is not None else _default(field)
        _collect(sub, f"{path}.{name}" if path else name, default if _is_model(default) else None, sections)


def _section(path: str, model: type, values: Any, tasks: dict) -> str:
    lines = []
    if path:
        level = "#" * min(2 + path.count("."), 4)  # [dataset] ##, [dataset.synthetic] ###, deeper ####
        lines.append(f"{level} `[{path}]` {{ #{_anchor(path)} }}\n")
    else:
        lines.append("## Top-level keys { #top-level }\n")
    doc = model.__dict__.get("__doc__")
    parts = path.split(".")
    if len(parts) == 2 and parts[0] == "tasks" and parts[1] in tasks:
        task = tasks[parts[1]]
        summary, reference = getattr(task, "summary", None), getattr(task, "reference", None)
        if isinstance(summary, str) and isinstance(reference, str):
            lines.append(f"Task `{parts[1]}`: {summary} ({reference}).\n")
    if doc:
        lines.append(inspect.cleandoc(doc) + "\n")
    comments = _field_comments(model)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        sub = _model_of(field.annotation)
        if field.is_required():
            default = "<em>required</em>"
        else:
            value = getattr(values, name) if values is not None else _default(field)
            default = _code(_toml(value)) if not _is_model(value) else f"[table](#{_anchor(key)})"
        kind = _type(field.annotation, field.metadata)
        if sub is not None:
            kind = f"[{kind}](#{_anchor(key)})"
        description = field.description or comments.get(name, "")
        rows.append(f"| `{name}` | {kind} | {default} | {_cell(description)} |")
    if len(rows) == 2:
        lines.append("No keys of its own.\n")
    else:
        lines.append("\n".join(rows) + "\n")
    return "\n".join(lines)


def _task_classes() -> dict:
    """``bench.tasks.TASKS`` as a plain dict (name -> Task class); empty when its shape is not that."""
    try:
        from bench.tasks import TASKS

        names = list(TASKS.keys()) if hasattr(TASKS, "keys") else list(TASKS)
        return {name: TASKS[name] for name in names}
    except (ImportError, AttributeError, TypeError, KeyError):
        return {}


def _task_config(task: Any) -> type | None:
    for attr in ("config", "Config"):
        model = getattr(task, attr, None)
        if isinstance(model, type) and hasattr(model, "model_fields"):
            return model
    return None


def _anchor(path: str) -> str:
    return "cfg-" + path.replace(".", "-").replace("_", "-")


# -- types, defaults ---------------------------------------------------------------------------------------------


def _is_model(obj: Any) -> bool:
    return hasattr(type(obj), "model_fields") and not isinstance(obj, type)


def _model_of(annotation: Any) -> type | None:
    """The model class of a field typed ``Model`` or ``Model | None``, else None."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    if _is_union(annotation):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and hasattr(a, "model_fields")]
        others = [a for a in typing.get_args(annotation) if a is not type(None) and a not in models]
        if len(models) == 1 and not others:
            return models[0]
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _default(field) -> Any:
    if field.default_factory is not None:
        try:
            return field.default_factory()
        except TypeError:  # a factory that takes the validated data
            return None
    return field.default


def _toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    if _is_model(value):
        return _toml(value.model_dump())
    return str(value)


def _type(annotation: Any, metadata: list | tuple = ()) -> str:
    text = _type_text(annotation)
    bounds = _bounds(metadata)
    return html.escape(text + (f" ({bounds})" if bounds else "")).replace("|", "&#124;")


def _type_text(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "none"
    if annotation is Any:
        return "any"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = _bounds(annotation.__metadata__)
        return _type_text(args[0]) + (f" ({bounds})" if bounds else "")
    if origin is typing.Literal:
        return " | ".join(_toml(a) for a in args)
    if _is_union(annotation):
        return " | ".join(_type_text(a) for a in args)
    if origin in (list, set, frozenset, collections.abc.Sequence):
        return f"list of {_grouped(args[0])}" if args else "list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_grouped(args[0])}"
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    if origin is dict:
        return f"table of {_type_text(args[1])}" if args else "table"
    if isinstance(annotation, type):
        if hasattr(annotation, "model_fields"):
            return "table"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _grouped(annotation: Any) -> str:
    """An element type, in parentheses when it is a choice: ``list of (int | "full")``."""
    text = _type_text(annotation)
    return f"({text})" if " | " in text else text


def _bounds(metadata: Any) -> str:
    """Constraints as text: ``> 0``, ``≥ 1``, ``at least 1 item``; nested ``Field(...)`` metadata included."""
    out = []
    for item in metadata or ():
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and attr in type(item).__name__.lower():
                out.append(f"{sign} {value:g}" if value < 2**31 else f"{sign} {value}")
        if type(item).__name__ == "MinLen":
            out.append(f"at least {item.min_length} item{'s' if item.min_length != 1 else ''}")
        if type(item).__name__ == "MaxLen":
            out.append(f"at most {item.max_length} items")
        nested = getattr(item, "metadata", None)
        if isinstance(nested, list) and nested is not metadata:
            inner = _bounds(nested)
            if inner:
                out.append(inner)
    return ", ".join(out)


def _code(text: str) -> str:
    return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"


def _cell(text: str) -> str:
    text = html.escape(" ".join(text.split()), quote=False)
    return text.replace("|", "&#124;").replace("*", "\\*")


# -- descriptions from the source --------------------------------------------------------------------------------


def _field_comments(model: type) -> dict[str, str]:
    """Field name -> the attribute docstring or comments of its definition, over the model's classes (MRO)."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if "__annotations__" not in cls.__dict__:
            continue
        try:
            source = _dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        out.update(_comments_in(source))
    return out


def _dedent(source: str) -> str:
    lines = source.splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines) + "\n"


def _comments_in(source: str) -> dict[str, str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
        return {}
    lines = source.splitlines()
    comments: dict[int, str] = {}  # line number (1-based) -> comment text
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}

    def comment_only(n: int) -> bool:
        return 1 <= n <= len(lines) and lines[n - 1].strip().startswith("#")

    body = tree.body[0].body
    out: dict[str, str] = {}
    claimed: set[int] = set()
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        after = body[i + 1] if i + 1 < len(body) else None
        if isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant):
            if isinstance(after.value.value, str):  # an attribute docstring
                out[name] = inspect.cleandoc(after.value.value)
                continue
        above = []
        n = node.lineno - 1
        while comment_only(n) and n not in claimed:
            above.insert(0, comments[n])
            n -= 1
        own = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments and n not in claimed]
        if own and len(lines[node.end_lineno - 1]) >= FULL_LINE and _unfinished(own[-1]):  # wrapped below
            n = node.end_lineno + 1
            while comment_only(n):
                own.append(comments[n])
                claimed.add(n)
                n += 1
        own_text = " ".join(own)
        if above and own_text:
            own_text = own_text[0].upper() + own_text[1:]
        text = " ".join(part for part in (_sentence(" ".join(above)), own_text) if part)
        if text:
            out[name] = text
    return out


def _unfinished(comment: str) -> bool:
    """A comment cut mid-sentence (it ends in a word or a comma), not one that closes with ``)`` or ``.``."""
    return bool(comment) and (comment[-1].isalnum() or comment[-1] in ",:;-")


def _sentence(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".:;!?":
        text += "."
    return text

"""Caption templates: the text sent with a file, from its inbox's template.

A template is ``str.format`` syntax restricted to :data:`TEMPLATE_FIELDS`; configuration
loading refuses anything else (:func:`template_problem`), so rendering never fails on a
template, and a value of an unexpected type is rendered with ``str()`` instead of stopping a
file from being sent.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Callable, Mapping
from datetime import datetime

#: The placeholders a caption template may use.
TEMPLATE_FIELDS = (
    "filename", "stem", "ext", "message_type", "content_type", "size", "inbox", "date", "time",
    "subfolder",
)  # fmt: skip

_SAMPLE_VALUES: dict[str, object] = {
    "filename": "scan.pdf", "stem": "scan", "ext": "pdf", "message_type": "document",
    "content_type": "application/pdf", "size": 12345, "inbox": "front-desk",
    "date": "2024-01-31", "time": "09:30:00", "subfolder": "2026-11",
}  # fmt: skip


def render_text(
    template: str, values: Mapping[str, object], extra: Mapping[str, str] | None = None
) -> str:
    """Fill a caption template with ``values``; a missing value renders empty.

    Only :data:`TEMPLATE_FIELDS` and the names in ``extra`` (a route's named groups) are
    looked up. A template that configuration loading would refuse raises ValueError; a
    value whose type does not suit its format spec is rendered with ``str()`` instead, so
    that a caption never stops a file from being sent.
    """
    extra = extra or {}
    problem = template_problem(template, tuple(extra))
    if problem is not None:
        raise ValueError(problem)
    parts: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            value = extra[name] if name in extra else values.get(name, "")
            parts.append(_format_value(value, spec or "", conversion))
    return "".join(parts)


def render_caption(
    template: str | None,
    *,
    name: str,
    message_type: str | None,
    content_type: str | None,
    size: int | None,
    inbox: str,
    fields: Mapping[str, str] | None = None,
) -> str | None:
    """The message text for a file from its inbox's caption template (None: no text).
    ``name`` is relative to the inbox: ``{filename}`` is its last part, ``{subfolder}`` the
    folder before it ("" at the top); ``fields``: more placeholders (the named groups of its
    inbox's ``route``)."""
    if not template:
        return None
    subfolder, _, name = name.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, ext = name, ""
    now = datetime.now().astimezone()
    return render_text(
        template,
        {
            "filename": name,
            "stem": stem,
            "ext": ext if dot else "",
            "message_type": message_type,
            "content_type": content_type,
            "size": size,
            "inbox": inbox,
            "date": now.strftime("%Y-%m-%d"),
            "time": now.strftime("%H:%M:%S"),
            "subfolder": subfolder,
        },
        extra=fields,
    )


def template_problem(template: str, extra: tuple[str, ...] = ()) -> str | None:
    """Why ``template`` is not a valid caption template, or None; ``extra``: more
    placeholder names it may use (the named groups of a ``route``)."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as error:
        return f"malformed braces ({error}); write {{{{ and }}}} for literal braces"
    for _, name, spec, conversion in pieces:
        if name is not None and name in extra:
            problem = _extra_problem(name, spec or "", conversion)
        else:
            problem = None if name is None else _placeholder_problem(name, spec or "", conversion)
        if problem is not None:
            return problem
    return None


def _placeholder_problem(name: str, spec: str, conversion: str | None) -> str | None:
    if name == "" or name.isdigit():
        return "positional placeholders ({} or {0}) are not allowed; name a field"
    if "." in name or "[" in name:
        return f"{{{name}}}: attribute and index access are not allowed"
    if name not in TEMPLATE_FIELDS:
        close = difflib.get_close_matches(name, TEMPLATE_FIELDS, n=1)
        hint = f" (did you mean {{{close[0]}}}?)" if close else ""
        return f"unknown placeholder {{{name}}}{hint}; known: {', '.join(TEMPLATE_FIELDS)}"
    # Formatting a value of the right type catches bad specs, nested fields, bad conversions.
    try:
        format(_convert(_SAMPLE_VALUES[name], conversion), spec)
    except (ValueError, TypeError) as error:
        return f"{{{name}}}: invalid format ({error})"
    return None


def _extra_problem(name: str, spec: str, conversion: str | None) -> str | None:
    """A route group's placeholder (a string) with a bad spec or conversion."""
    try:
        format(_convert("sample", conversion), spec)
    except (ValueError, TypeError) as error:
        return f"{{{name}}}: invalid format ({error})"
    return None


def _convert(value: object, conversion: str | None) -> object:
    converters: dict[str, Callable[[object], str]] = {"s": str, "r": repr, "a": ascii}
    if conversion is None:
        return value
    if conversion not in converters:
        raise ValueError(f"unknown conversion !{conversion}")
    return converters[conversion](value)


def _format_value(value: object, spec: str, conversion: str | None) -> str:
    # A value of an unexpected type must not stop a file from being sent: fall back to str().
    try:
        return format(_convert(value, conversion), spec)
    except (ValueError, TypeError):
        return str(value)

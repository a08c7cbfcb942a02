"""A folder of SVG files as an svg dataset: each file normalised into the canonical frame, or rejected.

`normalize_svg` turns a user's SVG into the same compact canonical code as the synthetic targets
(`svg_rlrf.data.synthetic`): ``<svg xmlns=... viewBox="0 0 C C">`` and the drawing, with

- metadata gone: comments, processing instructions, ``<title>``, ``<desc>``, ``<metadata>``, every
  element and attribute of another namespace (Inkscape, Sodipodi, RDF, ...; ``xlink:href`` stays),
  ``data-*``/``aria-*``/``role`` attributes, ids nothing references, classes when there is no
  ``<style>``, ``<g>`` elements without attributes (their children move up) and empty groups;
- ``style="..."`` declarations turned into presentation attributes, colours written ``#rrggbb``,
  values equal to what the element inherits anyway dropped (``fill-opacity="1"``, ``stroke="none"``,
  ...), and ``fill="#000000"`` written on every fillable shape that would be black by default (Font
  Awesome's icons set no fill: their code then says what the image shows, as the synthetic code does);
- the source frame (its viewBox, else width and height in absolute units) scaled uniformly into
  ``0 0 C C`` and centred, as ``preserveAspectRatio="xMidYMid meet"`` (the default) would; a source's
  other preserveAspectRatio is ignored, and drawing outside a non-square source viewBox may now show.

How the frame is mapped: when the drawing is only ``g``, ``path``, ``rect``, ``circle``, ``ellipse``,
``line``, ``polyline`` and ``polygon`` elements without ``transform`` attributes, with plain numbers
(the usual case, and every Font Awesome icon), the mapping is *baked in*: every coordinate and length
is mapped into the canonical frame and rounded to `decimals` places, path data is rewritten with
absolute commands (rounding relative ones would add up errors), and segments that rounding made empty
are dropped. Anything else (text, ``<use>``, gradients, nested transforms, ``<style>``, units) is
*wrapped*: the content goes unchanged into ``<g transform="translate(tx ty) scale(s)">``, and shape
geometry is rounded to the places that keep the same precision in canonical units. Stroke widths keep
one more decimal than coordinates, so thin strokes do not round away.

A file is rejected, with a reason (`FolderRejects` counts them and keeps a few file names each), when

======================  ============================================================================
reason                  the file ...
======================  ============================================================================
``too_large``           is over ``max_bytes`` bytes
``not_utf8``            is not UTF-8 text
``doctype``             declares entities or a DOCTYPE with an internal subset (a plain public
                        DOCTYPE is removed, not refused)
``unparsable``          is not well-formed XML
``not_svg``             has a root element other than ``<svg>``
``no_size``             has neither a usable viewBox nor absolute width and height
``raster_image``        embeds a raster image: an ``<image>`` element or a ``data:`` URI
``external_reference``  refers outside itself: ``href``/``xlink:href`` or ``url(...)`` not ``#id``,
                        CSS ``@import``
``active_content``      has ``<script>``, ``<foreignObject>`` or ``on*`` event attributes
``bad_path``            has path data that does not parse
``render_failed``       is refused or not rendered by `svg_rlrf.render`
``blank``               renders (almost) white
``duplicate``           normalises to the same code as a file taken before it
======================  ============================================================================

>>> code = normalize_svg('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 16"><!-- hi -->'
...                      '<rect x="0" y="0" width="32" height="16" style="fill:red"/></svg>', canvas=64)
>>> code[code.index("viewBox"):]
'viewBox="0 0 64 64"><rect x="0" y="16" width="64" height="32" fill="#ff0000"/></svg>'
"""

from __future__ import annotations

import math
import random
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from svg_rlrf.data.synthetic import (
    CHUNK,
    FORMAT,
    QUESTION,
    SVG_NS,
    TASK,
    element,
    fmt_num,
    level_stats,
    render_targets,
    split_table,
    svg_document,
    write_card,
)
from vlm_rl.data.writer import staged_folder, write_rows

XLINK_NS = "http://www.w3.org/1999/xlink"
MAX_BYTES = 200_000
"""Files larger than this are rejected (``too_large``) before they are read."""
MAX_EXAMPLES = 5
"""File names kept per reject reason."""

REASONS: tuple[str, ...] = ("too_large", "not_utf8", "doctype", "unparsable", "not_svg", "no_size", "raster_image",
                            "external_reference", "active_content", "bad_path", "render_failed", "blank",
                            "duplicate")
"""Every reason a file can be rejected for (the module's table says what each means)."""

BAKE_TAGS = frozenset({"svg", "g", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon"})
SHAPE_TAGS = frozenset({"path", "rect", "circle", "ellipse", "line", "polyline", "polygon"})
FILLABLE = frozenset({"path", "rect", "circle", "ellipse", "polyline", "polygon", "text"})
TEXT_TAGS = frozenset({"text", "tspan", "textPath", "style"})
DROPPED_TAGS = frozenset({"title", "desc", "metadata"})
ACTIVE_TAGS = frozenset({"script", "foreignObject", "iframe", "audio", "video", "canvas"})
CONTAINERS = frozenset({"g", "defs"})
X_ATTRS = frozenset({"x", "x1", "x2", "cx"})
Y_ATTRS = frozenset({"y", "y1", "y2", "cy"})
LENGTH_ATTRS = frozenset({"width", "height", "r", "rx", "ry"})
STROKE_LENGTHS = frozenset({"stroke-width", "stroke-dashoffset"})

PRESENTATION = frozenset({
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity", "stroke-linecap",
    "stroke-linejoin", "stroke-miterlimit", "stroke-dasharray", "stroke-dashoffset", "opacity", "color",
    "clip-path", "clip-rule", "mask", "filter", "display", "visibility", "font-family", "font-size", "font-weight",
    "font-style", "font-variant", "text-anchor", "dominant-baseline", "letter-spacing", "word-spacing",
    "text-decoration", "stop-color", "stop-opacity", "flood-color", "flood-opacity", "lighting-color", "marker",
    "marker-start", "marker-mid", "marker-end", "paint-order", "vector-effect", "shape-rendering", "overflow",
    "mix-blend-mode", "isolation",
})
"""CSS properties kept when a ``style`` attribute is turned into attributes (others are dropped)."""
COLOUR_PROPS = frozenset({"fill", "stroke", "color", "stop-color", "flood-color", "lighting-color"})
INITIAL: dict[str, str] = {
    "fill-opacity": "1", "stroke-opacity": "1", "fill-rule": "nonzero", "clip-rule": "nonzero", "stroke": "none",
    "stroke-linecap": "butt", "stroke-linejoin": "miter", "stroke-miterlimit": "4", "stroke-dasharray": "none",
    "stroke-dashoffset": "0", "visibility": "visible", "opacity": "1", "display": "inline", "filter": "none",
    "mask": "none", "clip-path": "none",
}
"""Initial values of the properties whose redundant settings are dropped."""
NOT_INHERITED = frozenset({"opacity", "display", "filter", "mask", "clip-path"})
UNITS_PX = {"": 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_LENGTH = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(px|pt|pc|mm|cm|in)?\s*")
_SEPARATORS = re.compile(r"[\s,]+")
_URL = re.compile(r"url\(\s*['\"]?([^)'\"]*)['\"]?\s*\)", re.IGNORECASE)
_DOCTYPE = re.compile(r"<!DOCTYPE\b[^>\[]*>", re.IGNORECASE)
_TRANSFORM = re.compile(r"(matrix|translate|scale|rotate|skewX|skewY)\s*\(([^)]*)\)")
_PATH_ARGS = {"M": 2, "L": 2, "T": 2, "H": 1, "V": 1, "C": 6, "S": 4, "Q": 4, "A": 7, "Z": 0}


class SvgReject(ValueError):
    """A file that cannot be a dataset item; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


@dataclass
class FolderRejects:
    """Files rejected while reading a folder: counts and a few example file names per reason."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seen: int = 0
    """Files looked at (accepted or rejected)."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, reason: str, name: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        names = self.examples.setdefault(reason, [])
        if len(names) < MAX_EXAMPLES:
            names.append(name)

    def as_dict(self) -> dict[str, Any]:
        return {"files_seen": self.seen, "rejected": self.total, "counts": dict(sorted(self.counts.items())),
                "examples": {k: v for k, v in sorted(self.examples.items())}}

    def summary(self) -> str:
        """One line, e.g. ``rejected 3 of 300 files: raster_image 2 (a.svg, b.svg); blank 1 (c.svg)``."""
        if not self.counts:
            return f"rejected 0 of {self.seen} files"
        parts = [f"{r} {n} ({', '.join(self.examples.get(r, []))})" for r, n in sorted(self.counts.items())]
        return f"rejected {self.total} of {self.seen} files: " + "; ".join(parts)


# ------------------------------------------------------------------------------------ small parsers


def _local(name: str) -> tuple[str | None, str]:
    """(namespace or None, local name) of an ElementTree tag or attribute name."""
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return None, name


def _number(value: str | None) -> float | None:
    """A plain number, also with a ``px`` suffix; None for anything else (other units, %, keywords)."""
    if value is None:
        return None
    match = _LENGTH.fullmatch(value)
    if not match or match.group(2) not in (None, "px"):
        return None
    return float(match.group(1))


def _absolute_length(value: str | None) -> float | None:
    """A width/height in px (absolute units converted); None for %, em and the like."""
    match = _LENGTH.fullmatch(value or "")
    return float(match.group(1)) * UNITS_PX[match.group(2) or ""] if match else None


def _numbers(value: str) -> list[float] | None:
    parts = [p for p in _SEPARATORS.split(value.strip()) if p]
    if not all(_NUMBER.fullmatch(p) for p in parts):
        return None
    return [float(p) for p in parts]


def parse_path(d: str) -> list[tuple[str, list[float]]]:
    """Path data as ``(command as written, arguments)`` segments, implicit repeats made explicit.

    Raises ``ValueError`` at the first thing that is not path data. Arc flags may be written without
    separators (``a1 1 0 0110 10``).

    >>> parse_path("M1 2 3 4z m.5-1h2")
    [('M', [1.0, 2.0]), ('L', [3.0, 4.0]), ('z', []), ('m', [0.5, -1.0]), ('h', [2.0])]
    """
    out: list[tuple[str, list[float]]] = []
    i, n, cmd = 0, len(d), ""

    def skip(i: int) -> int:
        while i < n and (d[i].isspace() or d[i] == ","):
            i += 1
        return i

    while (i := skip(i)) < n:
        if d[i].isalpha():
            cmd, i = d[i], i + 1
            if cmd.upper() not in _PATH_ARGS or (not out and cmd not in "Mm"):
                raise ValueError(f"unexpected command {cmd!r} at {i - 1}")
            if cmd in "Zz":
                out.append((cmd, []))
                continue
        elif not cmd or cmd in "Zz":
            raise ValueError(f"number without a command at {i}")
        args: list[float] = []
        for j in range(_PATH_ARGS[cmd.upper()]):
            i = skip(i)
            if cmd in "Aa" and j in (3, 4):
                if i >= n or d[i] not in "01":
                    raise ValueError(f"bad arc flag at {i}")
                args.append(float(d[i]))
                i += 1
                continue
            match = _NUMBER.match(d, i)
            if not match:
                raise ValueError(f"expected a number at {i}")
            args.append(float(match.group()))
            i = match.end()
        out.append((cmd, args))
        cmd = {"M": "L", "m": "l"}.get(cmd, cmd)
    return out


def absolute_path(segments: Sequence[tuple[str, list[float]]]) -> list[tuple[str, list[float]]]:
    """The same path with absolute commands only (``Z`` for ``z``).

    >>> absolute_path(parse_path("m1 1 2 0v3h-2z l1 1"))
    [('M', [1.0, 1.0]), ('L', [3.0, 1.0]), ('V', [4.0]), ('H', [1.0]), ('Z', []), ('L', [2.0, 2.0])]
    """
    out: list[tuple[str, list[float]]] = []
    cx = cy = sx = sy = 0.0
    for cmd, args in segments:
        up, rel = cmd.upper(), cmd.islower()
        if up == "Z":
            out.append(("Z", []))
            cx, cy = sx, sy
        elif up == "H":
            cx = args[0] + (cx if rel else 0.0)
            out.append(("H", [cx]))
        elif up == "V":
            cy = args[0] + (cy if rel else 0.0)
            out.append(("V", [cy]))
        elif up == "A":
            x, y = args[5] + (cx if rel else 0.0), args[6] + (cy if rel else 0.0)
            out.append(("A", [*args[:5], x, y]))
            cx, cy = x, y
        else:
            pts = [v + ((cx if k % 2 == 0 else cy) if rel else 0.0) for k, v in enumerate(args)]
            out.append((up, pts))
            cx, cy = pts[-2], pts[-1]
            if up == "M":
                sx, sy = cx, cy
    return out


@dataclass(frozen=True)
class _Map:
    """Uniform scale then translate, and the rounding of the numbers it produces."""

    s: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    decimals: int = 0

    def x(self, v: float) -> float:
        return round(self.s * v + self.tx, self.decimals)

    def y(self, v: float) -> float:
        return round(self.s * v + self.ty, self.decimals)

    def length(self, v: float, extra: int = 0) -> float:
        out = round(self.s * v, self.decimals + extra)
        return out if out or v == 0 else math.copysign(10.0 ** -(self.decimals + extra), v)

    def fmt(self, v: float, extra: int = 0) -> str:
        return fmt_num(v, self.decimals + extra)


def _map_segment(cmd: str, args: list[float], m: _Map) -> list[float]:
    if cmd == "H":
        return [m.x(args[0])]
    if cmd == "V":
        return [m.y(args[0])]
    if cmd == "A":
        return [m.length(args[0]), m.length(args[1]), round(args[2], 2), args[3], args[4], m.x(args[5]), m.y(args[6])]
    return [m.x(v) if k % 2 == 0 else m.y(v) for k, v in enumerate(args)]


def _is_empty(cmd: str, vals: list[float], cur: tuple[float, float]) -> bool:
    """Whether a mapped segment draws nothing from the current point (every point on it)."""
    if cmd == "H":
        return vals[0] == cur[0]
    if cmd == "V":
        return vals[0] == cur[1]
    if cmd == "A":
        return (vals[5], vals[6]) == cur
    if cmd in ("L", "C", "Q"):
        return all((vals[k], vals[k + 1]) == cur for k in range(0, len(vals), 2))
    return False


def map_path(d: str, m: _Map) -> str:
    """Path data mapped by `m`, absolute, rounded, compact (``M10 20L30 40Z``), empty segments dropped.

    >>> map_path("m 10 10 l 0.2 0.1 l 10 0 c 0 0 0 0 0 0 z", _Map(0.5, 1, 2))
    'M6 7L11 7Z'
    """
    segments = [(cmd, _map_segment(cmd, args, m)) for cmd, args in absolute_path(parse_path(d))]
    parts: list[str] = []
    cur = start = (0.0, 0.0)
    for k, (cmd, vals) in enumerate(segments):
        next_cmd = segments[k + 1][0] if k + 1 < len(segments) else ""
        if cmd != "M" and next_cmd not in ("S", "T") and _is_empty(cmd, vals, cur):
            continue
        text = [m.fmt(v, 2) if cmd == "A" and j == 2 else m.fmt(v) for j, v in enumerate(vals)]
        parts.append(cmd + " ".join(text))
        if cmd == "Z":
            cur = start
        elif cmd == "H":
            cur = (vals[0], cur[1])
        elif cmd == "V":
            cur = (cur[0], vals[0])
        else:
            cur = (vals[-2], vals[-1])
            if cmd == "M":
                start = cur
    return "".join(parts)


def _transform_scale(value: str) -> float:
    """The area scale factor (sqrt |det|) of a transform list; 1 for what does not parse."""
    det = 1.0
    for name, raw in _TRANSFORM.findall(value):
        args = _numbers(raw) or []
        if name == "matrix" and len(args) == 6:
            det *= args[0] * args[3] - args[1] * args[2]
        elif name == "scale" and args:
            det *= args[0] * (args[1] if len(args) > 1 else args[0])
    return math.sqrt(abs(det)) or 1.0


def _fmt_transform(value: str) -> str:
    """A transform list with single spaces and numbers to 4 places: ``translate(1.5 2) rotate(30)``."""
    out = []
    for name, raw in _TRANSFORM.findall(value):
        args = _numbers(raw)
        out.append(f"{name}({' '.join(fmt_num(a, 4) for a in args)})" if args is not None else f"{name}({raw.strip()})")
    return " ".join(out)


def _colour(value: str) -> str:
    """``#rrggbb`` for a plain CSS colour; anything else (none, url(#id), currentColor) unchanged."""
    from PIL import ImageColor

    text = value.strip()
    if text.lower() in ("none", "currentcolor", "inherit", "transparent") or text.lower().startswith("url("):
        return text
    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        return text
    return "#{:02x}{:02x}{:02x}".format(*rgb) if len(rgb) == 3 else text


def _resolve_current_colour(attrs: dict[str, str], inherited: dict[str, str]) -> None:
    """``fill``/``stroke`` of ``currentColor`` replaced by the `color` in effect (black by default)."""
    for prop in ("fill", "stroke"):
        if attrs.get(prop, "").lower() == "currentcolor":
            attrs[prop] = _colour(attrs.get("color") or inherited.get("color") or "#000000")


def _same(a: str, b: str) -> bool:
    x, y = _number(a), _number(b)
    return x == y if x is not None and y is not None else a.strip().lower() == b.strip().lower()


# -------------------------------------------------------------------------------------- the checks


def _decode(data: str | bytes, max_bytes: int) -> str:
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise SvgReject("too_large", f"{size} bytes (limit {max_bytes})")
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise SvgReject("not_utf8", str(err)) from None
    return data.lstrip("\ufeff")


def _parse(text: str) -> ET.Element:
    if re.search(r"<!ENTITY", text, re.IGNORECASE) or re.search(r"<!DOCTYPE[^>]*\[", text, re.IGNORECASE):
        raise SvgReject("doctype", "entity declarations / a DOCTYPE with an internal subset")
    text = _DOCTYPE.sub("", text, count=1)
    if re.search(r"<!DOCTYPE", text, re.IGNORECASE):
        raise SvgReject("doctype", "a second or unusual DOCTYPE")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise SvgReject("unparsable", str(err)) from None
    ns, tag = _local(root.tag)
    if tag != "svg" or ns not in (None, SVG_NS):
        raise SvgReject("not_svg", f"the root element is <{tag}>")
    return root


def _strip(el: ET.Element) -> None:
    """Remove foreign-namespace and metadata elements below `el` (in place)."""
    for child in list(el):
        if not isinstance(child.tag, str):  # a comment or processing instruction kept by a custom parser
            el.remove(child)
            continue
        ns, tag = _local(child.tag)
        if ns not in (None, SVG_NS) or tag in DROPPED_TAGS:
            el.remove(child)
        else:
            _strip(child)


def _check_urls(value: str, where: str) -> None:
    for target in _URL.findall(value):
        target = target.strip()
        if target.lower().startswith("data:"):
            raise SvgReject("raster_image", f"a data: URI in {where}")
        if not target.startswith("#"):
            raise SvgReject("external_reference", f"url({target}) in {where}")


def _check(root: ET.Element) -> set[str]:
    """Raise `SvgReject` for raster images, outside references and active content; return referenced ids."""
    refs: set[str] = set()
    for el in root.iter():
        tag = _local(el.tag)[1]
        if tag == "image":
            raise SvgReject("raster_image", "an <image> element")
        if tag in ACTIVE_TAGS:
            raise SvgReject("active_content", f"a <{tag}> element")
        if tag == "style" and el.text:
            if "@import" in el.text.lower():
                raise SvgReject("external_reference", "@import in <style>")
            _check_urls(el.text, "<style>")
            refs.update(t.strip()[1:] for t in _URL.findall(el.text))
        for key, value in el.attrib.items():
            name = _local(key)[1]
            if name.lower().startswith("on"):
                raise SvgReject("active_content", f"an event attribute {name!r} on <{tag}>")
            if name == "href":
                if value.strip().lower().startswith("data:"):
                    raise SvgReject("raster_image", f"a data: URI in {name} of <{tag}>")
                if not value.strip().startswith("#"):
                    raise SvgReject("external_reference", f"{name}={value.strip()[:80]!r} on <{tag}>")
                refs.add(value.strip()[1:])
            _check_urls(value, f"{name} of <{tag}>")
            refs.update(t.strip()[1:] for t in _URL.findall(value))
    return refs


def _source_frame(root: ET.Element) -> tuple[float, float, float, float]:
    viewbox = root.get("viewBox")
    if viewbox is not None:
        nums = _numbers(viewbox)
        if nums is None or len(nums) != 4 or nums[2] <= 0 or nums[3] <= 0:
            raise SvgReject("no_size", f"viewBox {viewbox!r} is not four numbers with a positive size")
        return nums[0], nums[1], nums[2], nums[3]
    width, height = _absolute_length(root.get("width")), _absolute_length(root.get("height"))
    if not width or not height or width <= 0 or height <= 0:
        raise SvgReject("no_size", "no viewBox, and width/height are missing or not absolute")
    return 0.0, 0.0, width, height


# ------------------------------------------------------------------------------------ normalising


def _attributes(el: ET.Element, refs: set[str], keep_classes: bool) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for key, value in el.attrib.items():
        ns, name = _local(key)
        if ns == XLINK_NS and name == "href":
            name = "xlink:href"
        elif ns is not None or name.startswith(("data-", "aria-")) or name in ("role", "style", "version"):
            continue
        if (name == "id" and value not in refs) or (name == "class" and not keep_classes):
            continue
        attrs[name] = " ".join(value.split())
    for declaration in (el.get("style") or "").split(";"):
        prop, _, value = declaration.partition(":")
        prop, value = prop.strip().lower(), value.replace("!important", "").strip()
        if prop in PRESENTATION and value:
            attrs[prop] = value
    for prop in COLOUR_PROPS & attrs.keys():
        attrs[prop] = _colour(attrs[prop])
    return attrs


def _bakeable(root: ET.Element) -> bool:
    """Whether the drawing can be mapped into the canonical frame number by number (see the module doc)."""
    for el in root.iter():
        tag = _local(el.tag)[1]
        if tag not in BAKE_TAGS or (el is not root and el.get("transform")) or (el is not root and tag == "svg"):
            return False
        attrs = _attributes(el, set(), False)
        for name in (X_ATTRS | Y_ATTRS | LENGTH_ATTRS | STROKE_LENGTHS) & attrs.keys():
            if el is not root and _number(attrs[name]) is None:
                return False
        for name in ("points", "stroke-dasharray"):
            if name in attrs and attrs[name] != "none" and _numbers(attrs[name].replace("px", "")) is None:
                return False
    return True


@dataclass
class _Normaliser:
    refs: set[str]
    keep_classes: bool
    baked: bool
    frame: _Map
    decimals: int

    def places(self, scale: float) -> int:
        """Decimal places in a frame scaled by `scale` that match `decimals` in the canonical frame."""
        return min(6, max(0, math.ceil(self.decimals + math.log10(max(scale, 1e-9)) - 1e-9)))

    def geometry(self, tag: str, attrs: dict[str, str], m: _Map) -> None:
        """Map (baked) or only round (wrapped, `m` the identity) the coordinates and lengths in place."""
        for name in STROKE_LENGTHS & attrs.keys():
            value = _number(attrs[name])
            if value is not None:
                attrs[name] = m.fmt(m.length(value, 1), 1)
        if "stroke-dasharray" in attrs and attrs["stroke-dasharray"] != "none":
            values = _numbers(attrs["stroke-dasharray"].replace("px", ""))
            if values is not None:
                attrs["stroke-dasharray"] = " ".join(m.fmt(m.length(v, 1), 1) for v in values)
        if tag not in SHAPE_TAGS:
            return
        for name in (X_ATTRS | Y_ATTRS | LENGTH_ATTRS) & attrs.keys():
            value = _number(attrs[name])
            if value is not None:
                mapped = m.x(value) if name in X_ATTRS else m.y(value) if name in Y_ATTRS else m.length(value)
                attrs[name] = m.fmt(mapped)
        if "points" in attrs:
            values = _numbers(attrs["points"]) or []
            pairs = zip(values[0::2], values[1::2], strict=False)
            attrs["points"] = " ".join(f"{m.fmt(m.x(x))},{m.fmt(m.y(y))}" for x, y in pairs)
        if "d" in attrs:
            try:
                attrs["d"] = map_path(attrs["d"], m)
            except ValueError as err:
                raise SvgReject("bad_path", f"path data: {err}") from None

    def emit(self, el: ET.Element, inherited: dict[str, str], scale: float) -> str:
        tag = _local(el.tag)[1]
        attrs = _attributes(el, self.refs, self.keep_classes)
        if attrs.get("display") == "none" and "id" not in attrs:
            return ""
        if "transform" in attrs:
            scale *= _transform_scale(attrs["transform"])
            attrs["transform"] = _fmt_transform(attrs["transform"])
        m = self.frame if self.baked else _Map(decimals=self.places(scale))
        self.geometry(tag, attrs, m)
        _resolve_current_colour(attrs, inherited)
        for prop in INITIAL.keys() & attrs.keys():
            base = INITIAL[prop] if prop in NOT_INHERITED else inherited.get(prop, INITIAL[prop])
            if _same(attrs[prop], base):
                del attrs[prop]
        here = {**inherited, **{k: v for k, v in attrs.items() if k in PRESENTATION and k not in NOT_INHERITED}}
        if tag in FILLABLE and "fill" not in here:
            attrs["fill"] = here["fill"] = "#000000"
        if self.baked and tag in SHAPE_TAGS and here.get("stroke", "none") != "none" and "stroke-width" not in here:
            attrs["stroke-width"] = m.fmt(m.length(1.0, 1), 1)  # the initial 1 source unit, mapped
        inner = self.inner(el, tag, here, scale)
        if tag in CONTAINERS and not inner:
            return ""
        if tag == "g" and not attrs:
            return inner
        return element(tag, attrs, inner)

    def inner(self, el: ET.Element, tag: str, inherited: dict[str, str], scale: float) -> str:
        text = tag in TEXT_TAGS
        parts = [_escape_text(el.text)] if text and el.text else []
        for child in el:
            parts.append(self.emit(child, inherited, scale))
            if text and child.tail:
                parts.append(_escape_text(child.tail))
        return "".join(parts)


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def normalize_svg(text: str | bytes, *, canvas: int = 64, decimals: int = 0, max_bytes: int = MAX_BYTES) -> str:
    """A user's SVG as compact canonical code in the frame ``0 0 canvas canvas`` (see the module doc).

    Raises `SvgReject` (a ``ValueError`` with ``.reason``, one of `REASONS`) for a file that cannot
    be an item; rendering checks (``blank``, ``render_failed``) are `write_from_dir`'s.
    """
    root = _parse(_decode(text, max_bytes))
    _strip(root)
    refs = _check(root)
    x0, y0, w, h = _source_frame(root)
    s = canvas / max(w, h)
    tx, ty = (canvas - w * s) / 2 - x0 * s, (canvas - h * s) / 2 - y0 * s
    keep_classes = any(_local(el.tag)[1] == "style" for el in root.iter())
    baked = _bakeable(root)
    frame = _Map(s, tx, ty, decimals)
    norm = _Normaliser(refs, keep_classes, baked, frame, decimals)
    root_attrs = {k: v for k, v in _attributes(root, set(), False).items() if k in PRESENTATION}
    m = frame if baked else _Map(decimals=norm.places(s))
    norm.geometry("svg", root_attrs, m)
    _resolve_current_colour(root_attrs, {})
    for prop in INITIAL.keys() & root_attrs.keys():
        if _same(root_attrs[prop], INITIAL[prop]):
            del root_attrs[prop]
    inherited = {k: v for k, v in root_attrs.items() if k not in NOT_INHERITED}
    inner = norm.inner(root, "svg", inherited, 1.0 if baked else s)
    if baked or (s == 1.0 and tx == 0.0 and ty == 0.0):
        return svg_document(inner, canvas, root_attrs)
    move = f"translate({fmt_num(tx, 4)} {fmt_num(ty, 4)}) " if fmt_num(tx, 4) != "0" or fmt_num(ty, 4) != "0" else ""
    wrapper = {**root_attrs, "transform": f"{move}scale({fmt_num(s, 6)})"}
    return svg_document(element("g", wrapper, inner), canvas)


_SHAPE_RE = re.compile(r"<(path|rect|circle|ellipse|line|polyline|polygon|text|use)\b")
_COLOUR_RE = re.compile(r'(?:fill|stroke)="(#[0-9a-f]{6})"')


def svg_meta(code: str) -> dict[str, Any]:
    """What a canonical SVG draws: ``n_shapes``, ``shapes`` (tags in order) and ``colours`` (distinct ``#rrggbb``).

    >>> svg_meta('<svg><g><rect fill="#ff0000"/><path stroke="#00ff00" fill="#ff0000"/></g></svg>')
    {'n_shapes': 2, 'shapes': ['rect', 'path'], 'colours': ['#ff0000', '#00ff00']}
    """
    shapes = _SHAPE_RE.findall(code)
    return {"n_shapes": len(shapes), "shapes": shapes, "colours": list(dict.fromkeys(_COLOUR_RE.findall(code)))}


# ------------------------------------------------------------------------------------------ writing


def svg_files(src: Path) -> list[Path]:
    """Every ``*.svg`` file under `src` (recursively, case-insensitive suffix), sorted by path."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"folder {src} does not exist")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() == ".svg" and p.is_file())
    if not files:
        raise FileNotFoundError(f"no .svg files in {src}")
    return files


@dataclass
class _Accepted:
    name: str
    code: str
    png: bytes


def _png(image: Any) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _collect(files: list[Path], src: Path, canvas: int, image_size: int, decimals: int, max_bytes: int,
             limit: int | None, bar: Any) -> tuple[list[_Accepted], FolderRejects]:
    """Normalise and render `files` in order until `limit` are accepted; rejects counted up to that point."""
    accepted: list[_Accepted] = []
    rejects, seen = FolderRejects(), set()
    for start in range(0, len(files), CHUNK):
        chunk = files[start:start + CHUNK]
        codes: list[str | SvgReject] = []
        for path in chunk:
            try:
                if path.stat().st_size > max_bytes:
                    raise SvgReject("too_large", f"{path.stat().st_size} bytes")
                codes.append(normalize_svg(path.read_bytes(), canvas=canvas, decimals=decimals, max_bytes=max_bytes))
            except SvgReject as reject:
                codes.append(reject)
        good = list(dict.fromkeys(c for c in codes if isinstance(c, str)))
        rendered = dict(zip(good, render_targets(good, canvas, image_size), strict=True))
        for path, code in zip(chunk, codes, strict=True):
            if limit is not None and len(accepted) >= limit:
                return accepted, rejects
            rejects.seen += 1
            bar.update()
            name = path.relative_to(src).as_posix()
            if isinstance(code, SvgReject):
                rejects.add(code.reason, name)
            elif code in seen:
                rejects.add("duplicate", name)
            else:
                image, reason = rendered[code]
                if image is None:
                    rejects.add((reason or "render_failed").split(":")[0], name)
                    continue
                seen.add(code)
                accepted.append(_Accepted(name, code, _png(image)))
    return accepted, rejects


def split_counts(n: int, val_frac: float, test_frac: float) -> dict[str, int]:
    """Train/val/test sizes of `n` items (val and test rounded, train the rest).

    >>> split_counts(10, 0.1, 0.3)
    {'train': 6, 'val': 1, 'test': 3}
    """
    if not (0 <= val_frac <= 1 and 0 <= test_frac <= 1 and val_frac + test_frac <= 1):
        raise ValueError(f"val_frac and test_frac must be in [0, 1] with a sum <= 1 (got {val_frac}, {test_frac})")
    n_test = min(n, round(n * test_frac))
    n_val = min(n - n_test, round(n * val_frac))
    return {"train": n - n_test - n_val, "val": n_val, "test": n_test}


def write_from_dir(
    src: Path, out: Path, *, canvas: int = 64, image_size: int = 112, val_frac: float = 0.05, test_frac: float = 0.1,
    seed: int = 0, limit: int | None = None, decimals: int = 0, max_bytes: int = MAX_BYTES, progress: bool = True,
    source: str = "folder", licence: dict[str, str] | None = None,
) -> Path:
    """Normalise every ``.svg`` under `src` into a dataset in the folder `out` and return it.

    Files are taken in a seeded random order (`seed`) until `limit` are accepted (all when None);
    accepted items go to test, val and train in that order by `val_frac`/`test_frac` (`split_counts`),
    so the splits are a seeded random partition. Rejected files are counted by reason with a few
    names each (`FolderRejects`) in ``dataset.json`` (``rejects``), and printed to stderr when
    `progress`. `source` names the collection in ``meta.source``; `licence` (``name``, ``url``,
    ``attribution``) is recorded in ``dataset.json`` and ``README.md``. Raises ``FileNotFoundError``
    for a missing folder or one without ``.svg`` files, ``FileExistsError`` for a non-empty `out`,
    ``ValueError`` when no file is usable.
    """
    from tqdm import tqdm

    src = Path(src)
    files = svg_files(src)
    counts = split_counts(0, val_frac, test_frac)  # checks the fractions before any work
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (got {limit})")
    random.Random(seed).shuffle(files)
    with staged_folder(Path(out)) as tmp:
        with tqdm(total=len(files) if limit is None else None, unit="file", disable=not progress,
                  dynamic_ncols=True, desc=f"svg/{source}") as bar:
            accepted, rejects = _collect(files, src, canvas, image_size, decimals, max_bytes, limit, bar)
        if not accepted:
            raise ValueError(f"no usable SVG file in {src}: {rejects.summary()}")
        counts = split_counts(len(accepted), val_frac, test_frac)
        offsets = {"test": 0, "val": counts["test"], "train": counts["test"] + counts["val"]}
        rows: dict[str, list[dict]] = {}
        for split in ("train", "val", "test"):
            if not counts[split]:
                continue
            (tmp / "images" / split).mkdir(parents=True)
            rows[split] = []
            for k, item in enumerate(accepted[offsets[split]:offsets[split] + counts[split]]):
                rel = f"images/{split}/{k:06d}.png"
                (tmp / rel).write_bytes(item.png)
                meta = {"source": source, "file": item.name, "canvas": canvas, "decimals": decimals,
                        "image_size": image_size, "chars": len(item.code), **svg_meta(item.code)}
                rows[split].append({"id": f"{source}-{split}-{k:06d}", "images": [rel], "question": QUESTION,
                                    "answer": item.code, "task": TASK, "meta": meta})
            write_rows(tmp / f"{split}.jsonl", rows[split])
        card, readme = _folder_card(src, source, counts, rows, rejects, seed, canvas, decimals, image_size, licence)
        write_card(tmp, card, readme)
    if progress:
        print(f"{source}: {len(accepted)} items; {rejects.summary()}", file=sys.stderr)
    return Path(out)


def _folder_card(src: Path, source: str, counts: dict[str, int], rows: dict[str, list[dict]], rejects: FolderRejects,
                 seed: int, canvas: int, decimals: int, image_size: int, licence: dict[str, str] | None,
                 ) -> tuple[dict[str, Any], list[str]]:
    every = [r for split_rows in rows.values() for r in split_rows]
    chars = [len(r["answer"]) for r in every]
    card: dict[str, Any] = {
        "format": FORMAT,
        "task": TASK,
        "source": source,
        "src": str(src),
        "seed": seed,
        "canvas": canvas,
        "viewbox": [0, 0, canvas, canvas],
        "decimals": decimals,
        "image_size": image_size,
        "question": QUESTION,
        "splits": {s: {"file": f"{s}.jsonl", "count": n} for s, n in counts.items() if n},
        "rejects": rejects.as_dict(),
        "stats": {"mean_chars": round(sum(chars) / len(chars), 1), "max_chars": max(chars),
                  "mean_shapes": round(sum(r["meta"]["n_shapes"] for r in every) / len(every), 2),
                  **level_stats([r for r in every if "complexity" in r["meta"]])},
        "normalisation": "svg_rlrf.data.folder.normalize_svg: metadata stripped, source frame scaled uniformly and "
                         "centred into the canonical viewBox, numbers rounded (see the module's docstring)",
    }
    if licence:
        card["licence"] = licence
    readme = [
        f"# svg dataset from {source} ({src.name})",
        "",
        f"Normalised from the `.svg` files of `{src}` (seed {seed}) by `svg_rlrf.data.folder.write_from_dir`. Each "
        f'row\'s `answer` is the file\'s SVG code mapped into `viewBox="0 0 {canvas} {canvas}"` (numbers rounded to '
        f"{decimals} decimals, metadata stripped); its image is that code rendered at {image_size} x {image_size} "
        "pixels on white.",
        "",
        *split_table(counts),
        "",
        f"- {rejects.summary()}.",
        "- Rows: `{id, images: [paths relative to this folder], question, answer, task, meta}`; `meta.file` is the "
        "source file, relative to the source folder.",
        "",
    ]
    if licence:
        readme += ["## Licence", "", f"{licence.get('attribution', '')}", "",
                   f"Licence: {licence.get('name', '')} ({licence.get('url', '')}).", ""]
    return card, readme

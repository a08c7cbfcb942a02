"""A renderer for untrusted SVG: the policy's code becomes an RGB image, or a failure with a reason.

The policy writes SVG; a reward renders it and compares it with the target. Anything a policy can write
must cost at most one sample, never the run, so rendering is split in two:

* `sanitize_svg` checks the document and rewrites it for rendering, raising `SvgError` with a reason.
  Refused before parsing: more than ``max_bytes`` bytes, bytes that are not UTF-8, and any ``<!DOCTYPE``,
  ``<!ENTITY`` (or other ``<!`` declaration) anywhere in the text, which rules out entity expansion
  ("billion laughs") and external entities. Then the text is parsed with `xml.etree` and refused when it
  is malformed, its root is not ``<svg>``, it has over `MAX_ELEMENTS` elements or nests them deeper than
  `MAX_DEPTH`, or it holds ``<image>``, ``<feImage>``, ``<foreignObject>``, ``<script>`` (or another
  embedding element), or an attribute holds a number of magnitude 1e9 or more, inf or nan (cairo's time
  grows with a circle's radius: ``r="1e30"`` hangs it). Nothing external is ever fetched: every ``href``,
  ``xlink:href``, ``src`` and ``url(...)`` (in attributes, style attributes and stylesheets) must be a
  same-document fragment (``#id``).
  ``data:`` URIs are refused too (the simplest rule: no decoding of policy-written images), as are
  ``@import``, CSS escapes (they could spell ``url``) and ``href`` in CSS (a CSS declaration sets an
  attribute in cairosvg). References are checked statically, cheaply: no cycles (``<use>`` of an ancestor,
  a pattern filled with itself), at most `MAX_USES` ``<use>``, nested at most `MAX_USE_DEPTH` deep,
  drawing at most `MAX_EXPANDED` elements once expanded; the timeout is the backstop. The document is
  re-serialised from the parsed tree (comments and processing instructions dropped) with the root's
  ``width``/``height`` set to the requested size and its ``viewBox`` set to the task's frame when one is
  given (it replaces the document's, so a tiny viewBox cannot zoom in; the root's ``preserveAspectRatio``
  is dropped then), else the document's own viewBox, else one derived from its absolute width/height,
  else ``0 0 size size``.
* `RenderPool` renders in worker processes: cairosvg with ``unsafe=False`` and a url_fetcher that refuses
  everything (defence in depth), on a size x size canvas whatever the document says, composited on
  white. Each worker caps its address space (``RLIMIT_AS``: what it has mapped at start plus
  ``memory_mb``) and every render has a wall-clock timeout; a worker that overruns it or dies is killed
  and replaced and only that sample fails ("timeout after 2.0 s", "renderer crashed (signal 11)", "out of
  memory"). A near-uniform image (every channel's max - min below `BLANK_RANGE`: an empty document, or
  one colour over the whole canvas) is a failure too, "blank render", with its image kept.

Workers start from the fork server (a clean single-threaded process that has imported cairosvg: a new
worker is ready in about 20 ms), never by forking the caller, whose threads (torch, tokenizers) make fork
unsafe; spawn is the fallback where there is no fork server. As with any spawn or forkserver
multiprocessing, a script that renders needs an ``if __name__ == "__main__":`` guard. Idle workers get
the items in chunks (fewer round trips); each render is still timed and answered on its own, and only
bytes travel: the SVG out, raw RGB back. Workers are replaced after `RECYCLE_AFTER` renders or after
running out of memory.

Rewards can be computed where the render happens: ``render_many(..., score=fn, targets=images)`` has each
worker call ``fn(image, target)`` (a picklable module-level function; numpy arrays, H x W x 3 uint8) on
every render that is ok and return its dict of floats in `RenderResult.scores`, so image comparisons run
in parallel too. A score function that raises leaves ``scores`` None (the caller computes them itself).
Workers of a pool that scores import the score function's module before capping their memory, with one
BLAS/OpenMP thread each.

`render_many` and `render_one` share one lazily created pool per worker count and score module (closed at
exit). Nothing here raises for a bad sample; a bad argument (``size <= 0``, an empty viewbox) raises
ValueError.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import multiprocessing
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from numbers import Integral
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported lazily: the fork server preloads this module and must stay thread-free
    import numpy as np

MAX_ELEMENTS = 5000
"""Elements a document may hold."""
MAX_DEPTH = 64
"""How deep elements may nest (cairosvg recurses per level)."""
MAX_USES = 500
"""``<use>`` elements a document may hold."""
MAX_USE_DEPTH = 8
"""How deep ``<use>`` may reference content that itself holds ``<use>``."""
MAX_EXPANDED = 20_000
"""Elements a document may draw once every ``<use>`` is expanded."""
MAX_SIZE = 4096
"""Largest canvas side a caller may ask for."""
BLANK_RANGE = 3
"""A render whose every RGB channel spans less than this (max - min) is blank."""
START_TIMEOUT_S = 60.0
"""How long a new worker may take to import cairosvg and report ready."""
RECYCLE_AFTER = 2000
"""Renders after which an idle worker is replaced (bounds leaks and heap growth under the memory cap)."""

FORBIDDEN_TAGS = frozenset({"image", "feimage", "foreignobject", "script", "iframe", "embed", "object",
                            "audio", "video", "canvas", "handler", "listener"})
_DECLARATION = re.compile(r"<!\s*[A-Za-z]")  # <!DOCTYPE, <!ENTITY, <!ATTLIST, ... (not <!-- or <![CDATA[)
_FRAGMENT = re.compile(r"#[\w.:-]+")
_URL_CALL = re.compile(r"url\s*\(", re.IGNORECASE)
_CSS_COMMENT = re.compile(r"/\*.*?(\*/|$)", re.DOTALL)
_LENGTH = re.compile(r"\s*([+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(px|pt|pc|mm|cm|in)?\s*")
_UNIT_PX = {None: 1.0, "px": 1.0, "pt": 96 / 72, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
# A number of magnitude 1e9 or more (10+ integer digits, or an exponent of 9 or more), or inf/nan: cairo spends
# time in proportion to a circle's radius (r="1e30" hangs it) and such values draw nothing sensible anyway.
_HUGE_NUMBER = re.compile(r"(?<![\d.])(?:\d{10,}|(?:\d+\.?\d*|\.\d+)[eE]\+?0*(?:9|[1-9]\d+)(?!\d))"
                          r"|(?<![A-Za-z])(?:inf|infinity|nan)(?![A-Za-z])", re.IGNORECASE)
_HASHED = re.compile(r"#[\w.:-]*")  # colours (#0e9e9e) and references, left out of the number check
_NOT_NUMERIC = frozenset({"id", "class", "font-family", "font", "lang", "systemlanguage"})
_BGRX = "BGRX" if sys.byteorder == "little" else "XRGB"  # cairo's RGB24 is a native-endian 32-bit word

_OK, _BLANK, _FAILED = 0, 1, 2

Viewbox = tuple[float, float, float, float]
RenderFn = Callable[[bytes, int, "Viewbox | None", int], bytes]
"""What a worker calls per item: (svg, size, viewbox, max_bytes) -> size*size*3 RGB bytes; raises on failure."""
ScoreFn = Callable[[Any, Any], dict]
"""What a worker may call on each good render: (image, target) -> {name: float} (module-level, picklable)."""


@dataclass
class RenderResult:
    ok: bool
    """The render is usable: drawn, not blank, within the limits."""
    image: np.ndarray | None
    """size x size x 3 uint8 RGB on white; None when nothing could be rendered (kept for a blank render)."""
    reason: str | None
    """Why not ok ("malformed XML: ...", "timeout after 2.0 s", "blank render", ...); None when ok."""
    seconds: float = 0.0
    """Wall-clock time of the render (or until it was given up)."""
    scores: dict[str, float] | None = None
    """What the pool's score function returned for this render (None: not asked, not ok, or it raised)."""


class SvgError(ValueError):
    """A document the renderer refuses; the message names the problem."""


# ---------------------------------------------------------------------------------------------- checks


SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def _local(name: str) -> str:
    """A tag or attribute name without its ``{namespace}``."""
    return name.rsplit("}", 1)[-1]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _as_bytes(svg: str | bytes) -> bytes:
    """UTF-8 bytes of a document (a str that cannot be encoded, e.g. lone surrogates, is refused)."""
    if isinstance(svg, str):
        try:
            return svg.encode("utf-8")
        except UnicodeEncodeError as err:
            raise SvgError(f"not UTF-8: {err.reason} at character {err.start}") from None
    if isinstance(svg, (bytes, bytearray, memoryview)):
        return bytes(svg)
    raise SvgError(f"not an SVG document: {type(svg).__name__}")


def _too_big(n_bytes: int, max_bytes: int) -> str:
    return f"document is {n_bytes} bytes, over the limit of {max_bytes}"


def _check_reference(value: str, where: str) -> str:
    """The id of a same-document reference (``#id``); refuse anything else."""
    ref = value.strip().strip("'\"").strip()
    if _FRAGMENT.fullmatch(ref):
        return ref[1:]
    if ref[:5].lower() == "data:":
        raise SvgError(f"data: URIs are not allowed ({where}={_short(ref, 40)!r})")
    raise SvgError(f"external reference {where}={_short(ref)!r} is not allowed (only same-document '#id')")


def _check_urls(text: str, where: str) -> list[str]:
    """The ids of every ``url(...)`` in an attribute value or a stylesheet; each must be a ``#id``."""
    refs = []
    for match in _URL_CALL.finditer(text):
        close = text.find(")", match.end())
        if close < 0:
            raise SvgError(f"unterminated url( in {where}")
        refs.append(_check_reference(text[match.end():close], f"{where} url()"))
    return refs


def _check_css(text: str, where: str) -> list[str]:
    """A stylesheet or style attribute: no escapes, no @import, no href, only ``url(#id)``; the ids."""
    plain = _CSS_COMMENT.sub("", text)
    if "\\" in plain:
        raise SvgError(f"CSS escapes are not allowed ({where})")
    lowered = plain.lower()
    if "@import" in lowered:
        raise SvgError(f"@import is not allowed ({where})")
    if "href" in lowered:
        raise SvgError(f"href in CSS is not allowed ({where})")
    return _check_urls(plain, where)


def _check_element(el: ET.Element) -> tuple[str, list[str]]:
    """Refuse a forbidden element or attribute; the element's lower-case local name and the ids it references."""
    tag = _local(el.tag).lower()
    if tag in FORBIDDEN_TAGS:
        raise SvgError(f"<{_local(el.tag)}> is not allowed")
    refs: list[str] = []
    for name, value in el.attrib.items():
        attr = _local(name).lower()
        if attr in ("href", "src"):
            refs.append(_check_reference(value, _local(name)))
        elif attr == "style":
            refs += _check_css(value, "style attribute")
        elif "url" in value.lower():
            refs += _check_urls(value, _local(name))
        if attr not in _NOT_NUMERIC and (huge := _HUGE_NUMBER.search(_HASHED.sub("#", value))):
            raise SvgError(f"number out of range ({_local(name)}={_short(huge.group(0), 20)!r})")
    if tag == "style":
        _check_css("".join(el.itertext()), "<style>")
    return tag, refs


@dataclass
class _Document:
    """What the reference checks need of a parsed document."""

    root: ET.Element
    ids: dict[str, ET.Element] = field(default_factory=dict)
    """The first element of each id, in document order (as cairosvg resolves ``#id``)."""
    refs: dict[int, list[ET.Element]] = field(default_factory=dict)
    """id(element) -> the elements it references (href, url(#id)) that exist."""
    uses: dict[int, ET.Element | None] = field(default_factory=dict)
    """id(<use>) -> its target (None when missing)."""


def _walk(root: ET.Element) -> _Document:
    """Check every element, in document order and iteratively (a deep document must not hit Python's recursion
    limit), and collect ids and references."""
    doc, pending = _Document(root), []
    count = 0
    stack = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        count += 1
        if count > MAX_ELEMENTS:
            raise SvgError(f"too many elements (over {MAX_ELEMENTS})")
        if depth > MAX_DEPTH:
            raise SvgError(f"elements nested deeper than {MAX_DEPTH}")
        tag, refs = _check_element(el)
        if refs or tag == "use":
            pending.append((el, tag, refs))
        el_id = el.get("id")
        if el_id is not None:
            doc.ids.setdefault(el_id, el)
        stack.extend((child, depth + 1) for child in reversed(el))
    n_uses = sum(tag == "use" for _, tag, _ in pending)
    if n_uses > MAX_USES:
        raise SvgError(f"too many <use> elements ({n_uses} > {MAX_USES})")
    for el, tag, refs in pending:
        doc.refs[id(el)] = [doc.ids[r] for r in refs if r in doc.ids]
        if tag == "use":  # cairosvg draws xlink:href, else href
            href = (el.get("{http://www.w3.org/1999/xlink}href") or el.get("href") or "").strip()
            doc.uses[id(el)] = doc.ids.get(href[1:]) if href.startswith("#") else None
    return doc


def _check_references(doc: _Document) -> None:
    """No reference cycles (cairosvg would recurse until it fails), and bounded ``<use>`` expansion: nesting and
    elements drawn. A post-order walk over children and references, iterative, memoised per element."""
    if not doc.refs:
        return
    expanded: dict[int, int] = {}  # id(element) -> elements it draws with every <use> expanded (capped)
    nesting: dict[int, int] = {}  # id(element) -> <use> hops below it
    open_: set[int] = set()  # the current path: a reference back into it is a cycle
    stack: list[tuple[ET.Element, bool]] = [(doc.root, False)]
    while stack:
        el, done = stack.pop()
        key = id(el)
        if done:
            target = doc.uses.get(key)
            below = [*el, target] if target is not None else list(el)
            hops = [nesting[id(c)] for c in el] + ([nesting[id(target)] + 1] if target is not None else [])
            nesting[key] = max(hops, default=0)
            expanded[key] = min(MAX_EXPANDED + 1, 1 + sum(expanded[id(d)] for d in below))
            open_.discard(key)
        elif key not in expanded:
            open_.add(key)
            stack.append((el, True))
            for dep in [*el, *doc.refs.get(key, ())]:
                if id(dep) in open_:
                    raise SvgError(f"reference cycle through id {_short(str(dep.get('id')), 30)!r}")
                if id(dep) not in expanded:
                    stack.append((dep, False))
    if nesting[id(doc.root)] > MAX_USE_DEPTH:
        raise SvgError(f"<use> nested deeper than {MAX_USE_DEPTH}")
    if expanded[id(doc.root)] > MAX_EXPANDED:
        raise SvgError(f"<use> expands to over {MAX_EXPANDED} elements")


def _parse_viewbox(text: str) -> Viewbox | None:
    """Four finite numbers with a positive width and height, else None."""
    try:
        values = tuple(float(v) for v in re.split(r"[\s,]+", text.strip()))
    except ValueError:
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        return None
    return values  # type: ignore[return-value]


def _length_px(text: str | None) -> float | None:
    """An absolute length in px ("100", "2in", "10mm"); None for a relative or unreadable one."""
    match = _LENGTH.fullmatch(text or "")
    if not match:
        return None
    value = float(match.group(1)) * _UNIT_PX[match.group(2)]
    return value if math.isfinite(value) and value > 0 else None


def _frame(root: ET.Element, size: int, viewbox: Viewbox | None) -> Viewbox:
    """The viewBox to render: the task's, else the document's, else one from its width/height, else the canvas."""
    if viewbox is not None:
        return viewbox
    own = root.get("viewBox")
    if own is not None:
        parsed = _parse_viewbox(own)
        if parsed is None:
            raise SvgError(f"invalid viewBox {_short(own, 40)!r}")
        return parsed
    width, height = _length_px(root.get("width")), _length_px(root.get("height"))
    if width is not None and height is not None:
        return (0.0, 0.0, width, height)
    return (0.0, 0.0, float(size), float(size))


def _check_viewbox_arg(viewbox: Sequence[float] | None) -> Viewbox | None:
    if viewbox is None:
        return None
    try:
        values = tuple(float(v) for v in viewbox)
    except (TypeError, ValueError) as err:
        raise ValueError(f"viewbox must be 4 numbers (min-x, min-y, width, height), got {viewbox!r}") from err
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"viewbox must be 4 finite numbers with width, height > 0, got {viewbox!r}")
    return values  # type: ignore[return-value]


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in 1..{MAX_SIZE}, got {size!r}")
    return int(size)


def sanitize_svg(svg: str | bytes, *, size: int, viewbox: Sequence[float] | None = None,
                 max_bytes: int = 200_000) -> bytes:
    """The document, checked and rewritten to render at ``size`` x ``size`` in ``viewbox`` (module docstring);
    raises `SvgError` naming the problem, ValueError for a bad ``size`` or ``viewbox``."""
    size, frame = _check_size(size), _check_viewbox_arg(viewbox)
    data = _as_bytes(svg)
    if len(data) > max_bytes:
        raise SvgError(_too_big(len(data), max_bytes))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SvgError(f"not UTF-8: {err.reason} at byte {err.start}") from None
    declaration = _DECLARATION.search(text)
    if declaration:  # before parsing: no DTD, so no entity expansion and no external entities
        raise SvgError(f"DOCTYPE/ENTITY declarations are not allowed ({_short(text[declaration.start():], 20)!r})")
    try:
        root = ET.fromstring(text.lstrip("\ufeff"))
    except ET.ParseError as err:
        raise SvgError(f"malformed XML: {err}") from None
    if _local(root.tag) != "svg":
        raise SvgError(f"root element is <{_short(_local(root.tag), 30)}>, not <svg>")
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else None
    if namespace is not None and namespace != SVG_NAMESPACE:  # cairosvg raises a TypeError on it; browsers draw nothing
        raise SvgError(f"root <svg> is in namespace {_short(namespace, 40)!r}, not {SVG_NAMESPACE!r}")
    _check_references(_walk(root))
    frame = _frame(root, size, frame)
    if viewbox is not None:
        root.attrib.pop("preserveAspectRatio", None)
    root.set("width", str(size))
    root.set("height", str(size))
    root.set("viewBox", " ".join(f"{v:.10g}" for v in frame))
    return ET.tostring(root, encoding="utf-8")


# ------------------------------------------------------------------------------------- in the workers


def _refuse_fetch(url: str, resource_type: str) -> bytes:
    """cairosvg's url_fetcher: nothing is ever fetched (sanitize_svg already refuses external references)."""
    raise SvgError(f"refused to fetch {_short(str(url), 60)!r} ({resource_type})")


def _render_rgb(svg: bytes, size: int, viewbox: Viewbox | None, max_bytes: int) -> bytes:
    """Sanitise and render in this process (no timeout, no memory cap): size*size*3 RGB bytes on white."""
    import cairocffi as cairo
    from cairosvg.parser import Tree
    from cairosvg.surface import PNGSurface
    from PIL import Image

    document = sanitize_svg(svg, size=size, viewbox=viewbox, max_bytes=max_bytes)
    tree = Tree(bytestring=document, unsafe=False, url_fetcher=_refuse_fetch)
    drawn = PNGSurface(tree, None, 96, output_width=size, output_height=size).cairo  # premultiplied ARGB
    canvas = cairo.ImageSurface(cairo.FORMAT_RGB24, size, size)
    context = cairo.Context(canvas)
    context.set_source_rgb(1.0, 1.0, 1.0)
    context.paint()
    context.set_source_surface(drawn, 0, 0)
    context.paint()
    canvas.flush()
    return Image.frombuffer("RGB", (size, size), canvas.get_data(), "raw", _BGRX, canvas.get_stride(), 1).tobytes()


def _is_blank(rgb: bytes, size: int) -> bool:
    from PIL import Image

    extrema = Image.frombuffer("RGB", (size, size), rgb, "raw", "RGB", 0, 1).getextrema()
    return all(high - low < BLANK_RANGE for low, high in extrema)


def _render_item(render_fn: RenderFn, svg: bytes, size: int, viewbox: Viewbox | None,
                 max_bytes: int) -> tuple[int, str | None, bytes | None]:
    """(status, reason, rgb) of one render; failures become reasons."""
    try:
        rgb = render_fn(svg, size, viewbox, max_bytes)
    except SvgError as err:
        return _FAILED, str(err), None
    except MemoryError:
        return _FAILED, "out of memory", None
    except RecursionError:
        return _FAILED, "render failed: nesting too deep (RecursionError)", None
    except Exception as err:  # noqa: BLE001 - whatever cairosvg raises costs this sample only
        return _FAILED, _short(f"render failed: {type(err).__name__}: {err}", 300), None
    if not isinstance(rgb, (bytes, bytearray)) or len(rgb) != size * size * 3:
        got = len(rgb) if isinstance(rgb, (bytes, bytearray)) else type(rgb).__name__
        return _FAILED, f"renderer returned {got} instead of {size * size * 3} RGB bytes", None
    return (_BLANK, "blank render", bytes(rgb)) if _is_blank(rgb, size) else (_OK, None, bytes(rgb))


def _cap_memory(memory_mb: int | None) -> None:
    """Limit this process's address space to what it maps now plus ``memory_mb``."""
    if memory_mb is None:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _score_item(score: ScoreFn, rgb: bytes, target: bytes, size: int) -> dict[str, float] | None:
    import numpy as np

    try:
        image = np.frombuffer(rgb, dtype=np.uint8).reshape(size, size, 3)
        ref = np.frombuffer(target, dtype=np.uint8).reshape(size, size, 3)
        return {str(k): float(v) for k, v in score(image, ref).items()}
    except Exception:  # noqa: BLE001 - the caller scores this one itself
        return None


def _worker_main(conn: Connection, memory_mb: int | None, render_fn: RenderFn,
                 preload: tuple[str, ...] = ()) -> None:
    """A worker: report ready, then answer each item of each job with (index, status, reason, seconds, rgb,
    scores)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if preload:
        import importlib

        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        for module in preload:
            importlib.import_module(module)
    _cap_memory(memory_mb)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        size, viewbox, max_bytes, watchdog_s, items, score = job
        for index, svg, target in items:
            # The parent kills an overrunning worker; the alarm ends one whose parent died mid-render.
            signal.setitimer(signal.ITIMER_REAL, watchdog_s)
            start = time.perf_counter()
            status, reason, rgb = _render_item(render_fn, svg, size, viewbox, max_bytes)
            scores = None
            if score is not None and target is not None and status == _OK and rgb is not None:
                scores = _score_item(score, rgb, target, size)
            seconds = time.perf_counter() - start
            signal.setitimer(signal.ITIMER_REAL, 0)
            conn.send((index, status, reason, seconds, rgb, scores))


# ---------------------------------------------------------------------------------------- in the parent


def _context() -> Any:
    """The fork server (preloaded with cairosvg) where there is one, else spawn; never fork: the caller's
    threads (torch, tokenizers) make forking it unsafe."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([m for m in (__name__, "cairosvg") if m != "__main__"])
        return ctx
    return multiprocessing.get_context("spawn")


def _crash_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "renderer stopped responding"
    if exitcode < 0:
        return f"renderer crashed (signal {-exitcode})"
    return f"renderer exited with code {exitcode}"


def _image(rgb: bytes, size: int) -> np.ndarray:
    import numpy as np

    return np.frombuffer(rgb, dtype=np.uint8).reshape(size, size, 3).copy()


@dataclass
class _Worker:
    process: Any
    conn: Connection
    born: float
    fd: int
    """The pipe's file descriptor (the process's sentinel is the other one watched)."""
    ready: bool = False
    items: deque[int] = field(default_factory=deque)
    """Indices sent and not yet answered, in the order the worker renders them."""
    started: float = 0.0
    """When items[0] started, by the parent's clock (no earlier than the worker's start: never times out early)."""
    rendered: int = 0
    """Items answered; the worker is replaced once idle after `RECYCLE_AFTER`, or after running out of memory."""


@dataclass
class _Batch:
    payloads: list[bytes | None]
    size: int
    viewbox: Viewbox | None
    timeout_s: float
    results: list[RenderResult | None]
    queue: deque[int]
    score: ScoreFn | None = None
    targets: list[bytes | None] = field(default_factory=list)


class RenderPool:
    """Worker processes that render untrusted SVG with a timeout and a memory cap per render.

    ``with RenderPool(2) as pool: results = pool.render_many(svgs, 128, viewbox=(0, 0, 64, 64))``.
    ``timeout_s`` is the wall-clock limit of one render; ``memory_mb`` the address space a worker may map
    beyond what it has at start (None: no cap); ``max_bytes`` the largest document. ``_render_fn`` replaces
    what a worker calls per item (`RenderFn`, a picklable module-level function), for tests that crash or
    hang a worker. ``preload`` names modules each worker imports before capping its memory (those of the
    score functions it will run). Not for use across a fork: a child creates its own pool.
    """

    def __init__(self, workers: int = 2, *, timeout_s: float = 2.0, memory_mb: int | None = 1024,
                 max_bytes: int = 200_000, preload: Sequence[str] = (), _render_fn: RenderFn | None = None,
                 ) -> None:
        if workers < 1 or timeout_s <= 0 or max_bytes < 1 or (memory_mb is not None and memory_mb < 1):
            raise ValueError(f"RenderPool needs workers >= 1, timeout_s > 0, max_bytes >= 1, memory_mb >= 1 "
                             f"(got {workers}, {timeout_s}, {max_bytes}, {memory_mb})")
        self.workers = int(workers)
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.max_bytes = int(max_bytes)
        self._render_fn = _render_fn or _render_rgb
        self.preload = tuple(preload)
        self._ctx = _context()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._start_failures = 0
        self._selector = selectors.DefaultSelector()  # one for the pool's life: a wait is one system call
        self._pool = [self._spawn() for _ in range(self.workers)]

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.process.pid for w in self._pool]

    def render_many(self, svgs: Sequence[str | bytes], size: int, *, viewbox: Sequence[float] | None = None,
                    timeout_s: float | None = None, score: ScoreFn | None = None,
                    targets: Sequence[Any] | None = None) -> list[RenderResult]:
        """One `RenderResult` per document, in input order; never raises for a bad document.

        ``viewbox`` (min-x, min-y, width, height) replaces each document's own; ``timeout_s`` overrides the
        pool's for this call. With ``score`` and ``targets`` (one size x size x 3 uint8 image per document,
        or None), workers score each good render against its target (`RenderResult.scores`).
        """
        size, frame = _check_size(size), _check_viewbox_arg(viewbox)
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if timeout <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        batch = _Batch([], size, frame, timeout, [None] * len(svgs), deque(), score)
        if score is not None:
            if targets is None or len(targets) != len(svgs):
                raise ValueError("render_many with score= needs one target (or None) per document")
            batch.targets = [_target_bytes(t, size) for t in targets]
        for i, svg in enumerate(svgs):
            try:
                data = _as_bytes(svg)
            except SvgError as err:
                data, batch.results[i] = None, RenderResult(False, None, str(err))
            if data is not None and len(data) > self.max_bytes:  # refused here: no need to ship megabytes
                data, batch.results[i] = None, RenderResult(False, None, _too_big(len(data), self.max_bytes))
            batch.payloads.append(data)
            if data is not None:
                batch.queue.append(i)
        with self._lock:
            if self._closed:
                raise RuntimeError("render_many on a closed RenderPool")
            if os.getpid() != self._pid:
                raise RuntimeError("a RenderPool cannot be used from a forked child; create one there")
            self._run(batch)
        return [r if r is not None else RenderResult(False, None, "not rendered") for r in batch.results]

    def close(self) -> None:
        """Stop the workers (killing any that do not stop within a second); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if os.getpid() != self._pid:  # a forked copy does not own the workers
                return
            for w in self._pool:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            for w in self._pool:
                self._stop(w, grace_s=1.0)
            self._selector.close()

    # -- the scheduling loop

    def _run(self, batch: _Batch) -> None:
        try:
            while batch.queue or any(w.items for w in self._pool):
                self._assign(batch)
                ready = self._wait(batch.timeout_s)
                now = time.monotonic()
                for slot in range(len(self._pool)):
                    self._service(slot, batch, now, ready)
        except BaseException:  # an interrupted batch must not leave workers mid-job for the next one
            for slot, w in enumerate(self._pool):
                if w.items:
                    self._stop(w, grace_s=0.0)
                    self._pool[slot] = self._spawn()
            raise

    def _assign(self, batch: _Batch) -> None:
        """Hand idle workers a chunk each (guided: large while much is left, single items at the end)."""
        for slot, w in enumerate(self._pool):
            if not batch.queue:
                return
            if not w.ready or w.items:
                continue
            if w.rendered >= RECYCLE_AFTER:
                self._retire(slot)
                continue
            n = max(1, min(32, len(batch.queue) // (2 * len(self._pool))))
            chunk = [batch.queue.popleft() for _ in range(min(n, len(batch.queue)))]
            watchdog_s = 4 * batch.timeout_s + 10
            items = [(i, batch.payloads[i], batch.targets[i] if batch.targets else None) for i in chunk]
            job = (batch.size, batch.viewbox, self.max_bytes, watchdog_s, items, batch.score)
            try:
                w.conn.send(job)
            except OSError:  # died while idle: blame no item, count it with failed starts
                batch.queue.extendleft(reversed(chunk))
                self._replace(slot, "a worker died while idle")
                continue
            w.items.extend(chunk)
            w.started = time.monotonic()

    def _wait(self, timeout_s: float) -> set[int]:
        """Sleep until a worker answers or dies, or the nearest deadline; the file descriptors ready."""
        deadline = math.inf
        for w in self._pool:
            if w.items:
                deadline = min(deadline, w.started + timeout_s)
            elif not w.ready:
                deadline = min(deadline, w.born + START_TIMEOUT_S)
        timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        return {key.fd for key, _ in self._selector.select(timeout)}

    def _service(self, slot: int, batch: _Batch, now: float, ready: set[int]) -> None:
        """Take a worker's answer; replace it when it died (even idle) or overran its item's deadline."""
        w = self._pool[slot]
        dead = w.process.sentinel in ready
        if w.fd in ready:
            try:
                self._receive(w, w.conn.recv(), batch)
            except (EOFError, OSError):
                dead = True
        if dead:
            self._drain(w, batch)  # answers sent before it died are in the pipe still
            w.process.join(1.0)  # its exit code says why
            self._lost(slot, batch, _crash_reason(w.process.exitcode))
        elif w.items and now - w.started > batch.timeout_s and not self._drain(w, batch):
            self._lost(slot, batch, f"timeout after {batch.timeout_s} s")
        elif not w.ready and now - w.born > START_TIMEOUT_S:
            self._stop(w, grace_s=0.0)
            raise RuntimeError(f"a render worker did not start within {START_TIMEOUT_S} s")

    def _drain(self, w: _Worker, batch: _Batch) -> bool:
        """Take every answer already in a worker's pipe; whether there was one."""
        got = False
        try:
            while w.conn.poll(0):
                self._receive(w, w.conn.recv(), batch)
                got = True
        except (EOFError, OSError):
            pass
        return got

    def _receive(self, w: _Worker, message: tuple, batch: _Batch) -> None:
        if message[0] == "ready":
            w.ready, self._start_failures = True, 0
            return
        index, status, reason, seconds, rgb, scores = message
        if not w.items or w.items[0] != index:
            raise RuntimeError(f"render worker answered item {index}, expected {list(w.items)[:1]}")
        w.items.popleft()
        w.started = time.monotonic()
        w.rendered += 1 if reason != "out of memory" else RECYCLE_AFTER
        image = _image(rgb, batch.size) if rgb is not None else None
        batch.results[index] = RenderResult(status == _OK, image, reason, seconds, scores)

    def _lost(self, slot: int, batch: _Batch, reason: str) -> None:
        """A worker died or overran: its current item fails with ``reason``, the rest of its chunk is queued
        again, and a fresh worker takes its place."""
        w = self._pool[slot]
        if w.items:
            index = w.items.popleft()
            batch.results[index] = RenderResult(False, None, reason, time.monotonic() - w.started)
            batch.queue.extendleft(reversed(w.items))
            w.items.clear()
            self._stop(w, grace_s=0.0)
            self._pool[slot] = self._spawn()
        else:
            self._replace(slot, reason)

    def _replace(self, slot: int, reason: str) -> None:
        """Replace a worker that died with no item to blame; repeated, the environment is broken."""
        self._stop(self._pool[slot], grace_s=0.0)
        self._start_failures += 1
        if self._start_failures > 3:
            raise RuntimeError(f"render workers keep dying before rendering anything ({reason}); a script that "
                               "renders must guard its entry point with `if __name__ == '__main__':`, as "
                               "multiprocessing's spawn and forkserver methods require")
        self._pool[slot] = self._spawn()

    def _retire(self, slot: int) -> None:
        """Replace an idle worker that has done its share."""
        w = self._pool[slot]
        with contextlib.suppress(OSError):
            w.conn.send(None)
        self._stop(w, grace_s=1.0)
        self._pool[slot] = self._spawn()

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        args = (child_end, self.memory_mb, self._render_fn, self.preload)
        process = self._ctx.Process(target=_worker_main, args=args,
                                    name="svg-render", daemon=True)
        process.start()
        child_end.close()
        w = _Worker(process, parent_end, time.monotonic(), parent_end.fileno())
        self._selector.register(w.fd, selectors.EVENT_READ)
        self._selector.register(process.sentinel, selectors.EVENT_READ)
        return w

    def _stop(self, w: _Worker, grace_s: float) -> None:
        """End a worker: wait ``grace_s`` for it to exit, then kill it; reap it and close its pipe."""
        for fd in (w.fd, w.process.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        if grace_s > 0:
            w.process.join(grace_s)
        if w.process.is_alive():
            w.process.kill()
        w.process.join(5.0)
        w.conn.close()


# ------------------------------------------------------------------------------------- the shared pool

_shared: dict[tuple[int, tuple[str, ...]], RenderPool] = {}
_shared_lock = threading.Lock()
_atexit_registered = False


def _target_bytes(target: Any, size: int) -> bytes | None:
    """A target image as the size*size*3 bytes a worker scores against (None: nothing to score)."""
    if target is None:
        return None
    import numpy as np

    array = np.ascontiguousarray(target, dtype=np.uint8)
    if array.shape != (size, size, 3):
        raise ValueError(f"a target image is {array.shape}, expected ({size}, {size}, 3)")
    return array.tobytes()


def _close_shared() -> None:
    with _shared_lock:
        pools = list(_shared.values())
        _shared.clear()
    for pool in pools:
        if pool._pid == os.getpid():
            pool.close()


def _shared_pool(workers: int | None, preload: tuple[str, ...] = ()) -> RenderPool:
    """The module's pool for this worker count and preload, created on first use (again after a fork)."""
    global _atexit_registered
    n = workers or min(2, os.cpu_count() or 1)
    with _shared_lock:
        for key, pool in list(_shared.items()):
            if pool._pid != os.getpid():  # inherited through a fork: the parent's workers are not ours
                del _shared[key]
            elif key[0] != n:  # one worker count at a time: stop pools of another one
                del _shared[key]
                pool.close()
        pool = _shared.get((n, preload))
        if pool is None:
            pool = _shared[(n, preload)] = RenderPool(n, preload=preload)
            if not _atexit_registered:
                atexit.register(_close_shared)
                _atexit_registered = True
        return pool


@functools.lru_cache(maxsize=1)
def renderer_problem() -> str | None:
    """Why SVGs cannot be rendered on this machine, or None: the cairosvg package, or the cairo library that it
    loads, is missing. Checked once per process, in a child process (this one stays free of cairo)."""
    try:
        proc = subprocess.run([sys.executable, "-c", "import cairocffi, cairosvg"], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cairosvg could not be checked ({type(err).__name__}: {err})"
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return (f"cairosvg cannot render on this machine ({_short(last, 160)}): it needs the cairosvg package and the "
            "cairo library (Debian/Ubuntu: apt-get install libcairo2)")


def require_renderer(what: str) -> None:
    """Raise, naming `what` and the cause, where SVGs cannot be rendered (a missing cairo would otherwise fail
    every render one by one, each scored as a failed sample)."""
    problem = renderer_problem()
    if problem:
        raise RuntimeError(f"{what} renders SVGs, but {problem}")


def render_many(svgs: Sequence[str | bytes], size: int, *, viewbox: Sequence[float] | None = None,
                workers: int | None = None, timeout_s: float = 2.0, score: ScoreFn | None = None,
                targets: Sequence[Any] | None = None, preload: Sequence[str] = ()) -> list[RenderResult]:
    """Render through a shared pool (``workers`` defaults to min(2, CPUs)); see `RenderPool.render_many`.
    The pool's workers import ``score``'s module and ``preload`` (modules it imports lazily) at start."""
    _check_size(size)
    if len(svgs) == 0:
        return []
    preload = ((score.__module__,) if score is not None else ()) + tuple(preload)
    return _shared_pool(workers, preload).render_many(svgs, size, viewbox=viewbox, timeout_s=timeout_s,
                                                      score=score, targets=targets)


def render_one(svg: str | bytes, size: int, **kw: Any) -> RenderResult:
    """`render_many` of one document."""
    return render_many([svg], size, **kw)[0]

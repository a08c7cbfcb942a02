"""The safe SVG renderer: colours at known pixels, transparency on white, the forced canvas and frame, what
sanitize_svg refuses (with its reason, fast), and that a crashing, hanging or memory-hungry render costs one
sample: the worker is replaced, the rest of the batch renders, the pool keeps working, close() ends it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from svg_rlrf import render
from svg_rlrf.render import RenderPool, RenderResult, SvgError, render_many, render_one, sanitize_svg

HEAD = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
XLINK_HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 64 64">'
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
REMOTE = "http://10.255.255.1/x.png"  # unroutable: a fetch would hang until a network timeout


def _hostile_render(svg: bytes, size: int, viewbox, max_bytes: int) -> bytes:
    """The workers' renderer, except for documents carrying a marker comment: crash, abort, exit, hang, hog."""
    if b"SEGV" in svg:
        os.kill(os.getpid(), signal.SIGSEGV)
    if b"ABORT" in svg:
        os.abort()
    if b"EXIT" in svg:
        os._exit(3)
    if b"HANG" in svg:
        time.sleep(3600)
    if b"HOG" in svg:
        bytearray(8 * 2**30)  # refused under RLIMIT_AS
    return render._render_rgb(svg, size, viewbox, max_bytes)


def _half(colour: str) -> str:
    """The left half of the canvas in one colour (not blank: the right half stays white)."""
    return HEAD + f'<rect width="32" height="64" fill="{colour}"/></svg>'


@pytest.fixture(scope="module")
def pool():
    with RenderPool(2, timeout_s=5.0) as p:
        yield p


def _one(pool: RenderPool, svg: str | bytes, size: int = 64, **kw) -> RenderResult:
    return pool.render_many([svg], size, **kw)[0]


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------ drawing


def test_rect_and_circle_colours_at_known_pixels(pool):
    # viewBox 0 0 64 64 at 128 px: 2 px per unit. The rect covers units [0, 32)^2 -> pixels [0, 64)^2;
    # the circle is centred on unit (48, 48) -> pixel (96, 96), radius 10 units -> 20 px.
    svg = HEAD + '<rect width="32" height="32" fill="#ff0000"/><circle cx="48" cy="48" r="10" fill="blue"/></svg>'
    res = _one(pool, svg, 128)
    assert res.ok and res.reason is None and res.seconds > 0
    img = res.image
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and img.flags.writeable
    assert tuple(img[10, 10]) == RED and tuple(img[63, 63]) == RED  # image[y, x]
    assert tuple(img[96, 96]) == BLUE and tuple(img[96, 110]) == BLUE  # 14 px from the centre: inside
    assert tuple(img[96, 120]) == WHITE  # 24 px from the centre: outside
    assert tuple(img[10, 100]) == WHITE and tuple(img[100, 10]) == WHITE


def test_same_document_references_still_draw(pool):
    # <use> by href and xlink:href, a gradient by url(#id), a class from a stylesheet: all survive the rewrite
    svg = XLINK_HEAD + (
        '<style>.g { fill: #00ff00; }</style><defs><rect id="sq" width="16" height="16" fill="red"/>'
        '<linearGradient id="lg"><stop offset="0" stop-color="blue"/><stop offset="1" stop-color="blue"/>'
        '</linearGradient></defs><use href="#sq"/><use xlink:href="#sq" x="32"/>'
        '<rect y="32" width="16" height="16" fill="url(#lg)"/><rect class="g" x="32" y="32" width="16" height="16"/>'
        "</svg>")
    img = _one(pool, svg).image
    assert tuple(img[8, 8]) == RED and tuple(img[8, 40]) == RED
    assert tuple(img[40, 8]) == BLUE and tuple(img[40, 40]) == (0, 255, 0)
    assert tuple(img[24, 24]) == WHITE


def test_transparency_is_composited_on_white(pool):
    # black at alpha 0.5 over white: 255 * 0.5 = 127.5; blue at opacity 0.25: r, g = 255 * 0.75 = 191.25
    svg = HEAD + ('<rect width="32" height="32" fill="black" fill-opacity="0.5"/>'
                  '<rect x="32" width="32" height="32" fill="#0000ff" opacity="0.25"/>'
                  '<rect y="32" width="32" height="32" fill="red" fill-opacity="0"/></svg>')
    img = _one(pool, svg).image
    np.testing.assert_allclose(img[8, 8], [127.5] * 3, atol=1.5)
    np.testing.assert_allclose(img[8, 40], [191.25, 191.25, 255], atol=1.5)
    assert tuple(img[40, 8]) == WHITE  # fully transparent: the white canvas, not black
    assert tuple(img[40, 40]) == WHITE  # nothing drawn


HALF_64 = '<rect width="32" height="64" fill="red"/>'


@pytest.mark.parametrize("root, rect", [
    # the document's viewBox is kept, its width/height are ignored
    ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10000" viewBox="0 0 64 64">', HALF_64),
    ('<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000" viewBox="0 0 64 64">', HALF_64),
    # no viewBox: one from the absolute width/height, 0 0 100000 100000, in which this rect is the left half
    ('<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">',
     '<rect width="50000" height="100000" fill="red"/>'),
    # a width alone is no frame: the canvas's own, 0 0 64 64
    ('<svg xmlns="http://www.w3.org/2000/svg" width="100000">', HALF_64),
])
def test_the_canvas_is_always_the_requested_size(pool, root, rect):
    res = _one(pool, root + rect + "</svg>")
    assert res.ok, res.reason
    assert res.image.shape == (64, 64, 3)
    assert tuple(res.image[32, 10]) == RED and tuple(res.image[32, 50]) == WHITE


def test_a_tall_thin_document_still_fills_the_requested_canvas(pool):
    # 0 0 10 10000 fitted into 64 x 64 (xMidYMid meet) is a sliver of 0.064 px: the result is 64 x 64 anyway
    res = _one(pool, '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10000">'
                     '<rect width="10" height="10000" fill="red"/></svg>')
    assert res.image is not None and res.image.shape == (64, 64, 3)
    assert res.ok or res.reason == "blank render"


def test_the_task_viewbox_replaces_the_documents(pool):
    # The document zooms on 0 0 8 8: alone, its red square fills the canvas (with a blue quarter).
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8" preserveAspectRatio="xMinYMin slice">'
           '<rect width="8" height="8" fill="red"/><rect x="4" width="4" height="4" fill="blue"/></svg>')
    own = _one(pool, svg).image
    assert tuple(own[60, 4]) == RED and tuple(own[4, 60]) == BLUE
    # In the task's frame 0 0 64 64 the square is 8 units = 8 px: no zooming in.
    framed = _one(pool, svg, viewbox=(0, 0, 64, 64)).image
    assert tuple(framed[6, 2]) == RED and tuple(framed[2, 6]) == BLUE
    assert tuple(framed[9, 9]) == WHITE and tuple(framed[60, 60]) == WHITE
    out = sanitize_svg(svg, size=64, viewbox=(0, 0, 64, 64))
    assert b'viewBox="0 0 64 64"' in out and b"preserveAspectRatio" not in out


def test_sanitize_sets_the_canvas_and_derives_the_frame():
    out = sanitize_svg('<svg xmlns="http://www.w3.org/2000/svg" width="2in" height="1in"><!-- c --><?pi x?>'
                       '<rect width="1" height="1"/></svg>', size=96)
    assert b'width="96"' in out and b'height="96"' in out and b'viewBox="0 0 192 96"' in out
    assert b"<!--" not in out and b"<?" not in out
    assert b'viewBox="0 0 32 32"' in sanitize_svg('<svg width="50%" height="3em"/>', size=32)
    assert b'viewBox="-1 -2 3 4"' in sanitize_svg('<svg viewBox="-1,-2 3,4" width="0"/>', size=32)
    with pytest.raises(SvgError, match="invalid viewBox"):
        sanitize_svg('<svg viewBox="0 0 0 10"/>', size=32)
    # hex colours are not numbers; up to 1e9 is in range
    sanitize_svg('<svg><rect fill="#a0e9ff" style="fill:#1e9e9e" width="1e8" height="999999999"/></svg>', size=8)


# ---------------------------------------------------------------------------------------- refusals


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
                            for i in range(1, 10))
                  + ']><svg xmlns="http://www.w3.org/2000/svg"><text>&lol9;</text></svg>')


def _use_bomb(levels: int, fan: int) -> str:
    defs = '<g id="l0"><rect width="1" height="1"/></g>'
    for i in range(1, levels + 1):
        defs += f'<g id="l{i}">' + f'<use href="#l{i - 1}"/>' * fan + "</g>"
    return HEAD + f'<defs>{defs}</defs><use href="#l{levels}"/></svg>'


@pytest.mark.parametrize("svg, reason", [
    (HEAD + '<rect width="9" height="9" fill="red"></svg>', "malformed XML: mismatched tag"),
    ("", "malformed XML"),
    ("I cannot draw that", "malformed XML"),
    ('<html xmlns="http://www.w3.org/1999/xhtml"><svg/></html>', "root element is <html>, not <svg>"),
    ('<svg xmlns="http://www.w3.org/2.org/2000/svg"><rect width="9" height="9"/></svg>',  # seen from a policy
     "root <svg> is in namespace 'http://www.w3.org/2.org/2000/svg'"),
    (BILLION_LAUGHS, "DOCTYPE/ENTITY declarations are not allowed"),
    ('<!DOCTYPE svg SYSTEM "file:///etc/passwd"><svg/>', "DOCTYPE/ENTITY declarations are not allowed"),
    (HEAD + f'<image href="{REMOTE}" width="64" height="64"/></svg>', "<image> is not allowed"),
    (HEAD + '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject></svg>',
     "<foreignObject> is not allowed"),
    (HEAD + "<script>alert(1)</script></svg>", "<script> is not allowed"),
    (HEAD + f'<filter id="f"><feImage href="{REMOTE}"/></filter></svg>', "<feImage> is not allowed"),
    (HEAD + '<use href="http://10.255.255.1/x.svg#a"/></svg>', "external reference href="),
    (XLINK_HEAD + '<use xlink:href="https://10.255.255.1/x.svg#a"/></svg>', "external reference href="),
    (HEAD + '<rect width="9" height="9" fill="url(http://10.255.255.1/p.svg#g)"/></svg>', "external reference"),
    (HEAD + "<style>@import url(http://10.255.255.1/s.css);</style></svg>", "@import is not allowed"),
    (HEAD + "<style>rect { fill: url('http://10.255.255.1/p.svg#g') }</style></svg>", "external reference"),
    (HEAD + '<rect style="fill: u\\72 l(http://10.255.255.1/p.svg#g)"/></svg>', "CSS escapes are not allowed"),
    (HEAD + '<use style="href: url(#a)"/></svg>', "href in CSS is not allowed"),
    (HEAD + '<use href="data:image/svg+xml;base64,PHN2Zy8+"/></svg>', "data: URIs are not allowed"),
    (HEAD + '<rect width="9" height="9" fill="url(\'data:image/svg+xml,&lt;svg/>\')"/></svg>', "data: URIs"),
    (HEAD + '<rect width="9" height="9" fill="url(#g"/></svg>', "unterminated url("),
    (_use_bomb(5, 10), "<use> expands to over 20000 elements"),
    (_use_bomb(9, 1), "<use> nested deeper than 8"),
    (HEAD + '<g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g></svg>', "reference cycle through id"),
    (HEAD + '<g id="a"><use href="#a"/></g><g id="a"/></svg>', "reference cycle through id 'a'"),  # the first #a
    (HEAD + '<pattern id="p" width="2" height="2"><rect width="1" height="1" fill="url(#p)"/></pattern></svg>',
     "reference cycle through id 'p'"),
    (HEAD + '<use href="#a"/>' * 501 + '<rect id="a"/></svg>', "too many <use> elements (501 > 500)"),
    (HEAD + '<circle cx="32" cy="32" r="1e30"/></svg>', "number out of range (r='1e30')"),  # hangs cairo
    (HEAD + '<rect width="9" height="9" style="stroke-width: Infinity"/></svg>', "number out of range (style="),
    (HEAD + "<g/>" * 5000 + "</svg>", "too many elements (over 5000)"),
    (HEAD + "<g>" * 64 + "</g>" * 64 + "</svg>", "elements nested deeper than 64"),
])
def test_refusals_name_the_problem_and_are_fast(pool, svg, reason):
    start = time.perf_counter()
    res = _one(pool, svg)
    assert not res.ok and res.image is None and reason in res.reason, res.reason
    assert time.perf_counter() - start < 2.0  # nothing was fetched, expanded or rendered
    with pytest.raises(SvgError, match=reason.split(":")[0][:12]):
        sanitize_svg(svg, size=64)


def test_a_local_file_is_never_read(pool, tmp_path: Path):
    secret = tmp_path / "secret.svg"
    secret.write_text(HEAD + '<rect id="x" width="64" height="64" fill="red"/></svg>')
    docs = [HEAD + f'<use href="{secret}#x"/></svg>', HEAD + f'<use href="file://{secret}#x"/></svg>',
            XLINK_HEAD + f'<use xlink:href="{secret.name}#x"/></svg>',
            HEAD + f'<rect width="64" height="64" fill="url({secret}#x)"/></svg>']
    start = time.perf_counter()
    for res in pool.render_many(docs, 64):
        assert not res.ok and res.image is None and "external reference" in res.reason, res.reason
    assert time.perf_counter() - start < 2.0


def test_cairosvg_is_given_a_fetcher_that_refuses_everything(tmp_path: Path):
    # defence in depth: even a document that skipped sanitize_svg fetches nothing through our fetcher
    from cairosvg.parser import Tree
    from cairosvg.surface import PNGSurface

    (tmp_path / "other.svg").write_text(HEAD + '<rect id="x" width="9" height="9"/></svg>')
    doc = (HEAD + f'<use href="file://{tmp_path}/other.svg#x"/></svg>').encode()
    with pytest.raises(SvgError, match="refused to fetch 'file://"):
        PNGSurface(Tree(bytestring=doc, unsafe=False, url_fetcher=render._refuse_fetch), None, 96)


def test_a_use_bomb_fails_within_the_timeout(pool):
    start = time.perf_counter()
    res = _one(pool, _use_bomb(7, 10))  # 10^7 rects once expanded
    assert not res.ok and "<use>" in res.reason
    assert time.perf_counter() - start < pool.timeout_s + 1.0


def test_size_and_encoding_limits(pool):
    megabytes = HEAD + '<path d="M0 0' + " L1 1" * 600_000 + '"/></svg>'  # 3.6 MB of path data
    latin1 = (HEAD + "<text>caf\xe9</text></svg>").encode("latin-1")
    start = time.perf_counter()
    big, bad, surrogate, nothing = pool.render_many([megabytes, latin1, HEAD + "\ud800</svg>", None], 64)
    assert time.perf_counter() - start < 2.0
    assert not big.ok and big.reason == f"document is {len(megabytes)} bytes, over the limit of 200000"
    assert not bad.ok and bad.reason.startswith("not UTF-8: invalid continuation byte at byte")
    assert not surrogate.ok and surrogate.reason.startswith("not UTF-8")
    assert not nothing.ok and nothing.reason == "not an SVG document: NoneType"
    with RenderPool(1, max_bytes=100) as small:
        assert "over the limit of 100" in _one(small, HEAD + "<g/>" * 30 + "</svg>").reason


@pytest.mark.parametrize("svg", [HEAD + "</svg>", HEAD + '<rect width="64" height="64" fill="#3cb44b"/></svg>',
                                 HEAD + '<rect width="64" height="64" fill="red" fill-opacity="0.004"/></svg>'])
def test_a_blank_render_fails_and_keeps_its_image(pool, svg):
    res = _one(pool, svg)
    assert not res.ok and res.reason == "blank render"
    assert res.image.shape == (64, 64, 3) and np.ptp(res.image.reshape(-1, 3), axis=0).max() < render.BLANK_RANGE


def test_a_small_mark_is_not_blank(pool):
    res = _one(pool, HEAD + '<rect x="30" y="30" width="2" height="2" fill="black"/></svg>')
    assert res.ok and tuple(res.image[31, 31]) == (0, 0, 0)


# ---------------------------------------------------------------------------------------- the pool


def test_results_come_back_in_input_order(pool):
    colours = [(i * 37 % 256, i * 91 % 256, 255 - i * 13 % 256) for i in range(40)]
    svgs = [_half("#{:02x}{:02x}{:02x}".format(*c)) for c in colours]
    bad = {5: "<svg", 17: HEAD + "</svg>", 30: HEAD + f'<image href="{REMOTE}"/></svg>'}
    for i, svg in bad.items():
        svgs[i] = svg
    results = pool.render_many(svgs, 32)
    assert len(results) == 40
    for i, (res, colour) in enumerate(zip(results, colours, strict=True)):
        if i in bad:
            assert not res.ok
        else:
            assert res.ok and tuple(res.image[16, 4]) == colour and tuple(res.image[16, 28]) == WHITE


def test_a_crash_or_hang_costs_one_sample_and_the_pool_keeps_working():
    good = [_half(c) for c in ("#ff0000", "#00ff00", "#0000ff", "#ffff00", "#00ffff")]
    batch = [good[0], HEAD + "<!-- SEGV --></svg>", good[1], HEAD + "<!-- HANG --></svg>", good[2],
             HEAD + "<!-- ABORT --></svg>", good[3], HEAD + "<!-- EXIT --></svg>", HEAD + "<!-- HOG --></svg>",
             good[4]]
    with RenderPool(2, timeout_s=1.0, memory_mb=256, _render_fn=_hostile_render) as pool:
        before = set(pool.pids)
        start = time.perf_counter()
        results = pool.render_many(batch, 32)
        elapsed = time.perf_counter() - start
        reasons = [r.reason for r in results]
        assert reasons == [None, f"renderer crashed (signal {signal.SIGSEGV.value})", None, "timeout after 1.0 s",
                           None, f"renderer crashed (signal {signal.SIGABRT.value})", None,
                           "renderer exited with code 3", "out of memory", None]
        assert 1.0 <= results[3].seconds < 4.0 and elapsed < 1.0 + 8.0
        for res, svg in zip(results, batch, strict=True):
            if svg in good:
                assert res.ok and tuple(res.image[16, 4]) != WHITE
        assert len(before - set(pool.pids)) >= 1  # killed workers were replaced
        again = pool.render_many(good + [HEAD + "<!-- HANG --></svg>"], 32, timeout_s=0.5)
        assert [r.ok for r in again] == [True] * 5 + [False] and again[-1].reason == "timeout after 0.5 s"


def test_a_render_that_needs_too_much_memory_fails_with_a_reason():
    # A 8000 x 8000 pattern tile is a 256 MB cairo surface; the worker may map only 128 MB more than at start.
    svg = HEAD + ('<defs><pattern id="p" width="8000" height="8000" patternUnits="userSpaceOnUse">'
                  '<rect width="5" height="5" fill="red"/></pattern></defs>'
                  '<rect width="32" height="64" fill="url(#p)"/></svg>')
    with RenderPool(1, memory_mb=128) as pool:
        first = pool.pids
        res, ok = pool.render_many([svg, _half("red")], 64)
        assert not res.ok and res.reason == "out of memory"
        assert ok.ok
        assert pool.render_many([_half("blue")], 64)[0].ok and pool.pids != first  # a fresh heap after that


def test_workers_are_recycled_after_their_share(monkeypatch):
    monkeypatch.setattr(render, "RECYCLE_AFTER", 3)
    with RenderPool(1) as pool:
        seen = set(pool.pids)
        for _ in range(4):
            assert all(r.ok for r in pool.render_many([_half("red")] * 3, 16))
            seen.update(pool.pids)
        assert len(seen) >= 3


def test_close_leaves_no_worker_processes():
    pool = RenderPool(2)
    assert pool.render_many([_half("red")], 16)[0].ok
    pids = pool.pids
    assert all(_alive(pid) for pid in pids)
    pool.close()
    pool.close()  # idempotent
    deadline = time.monotonic() + 5.0
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.render_many([_half("red")], 16)


def test_module_level_helpers_share_one_pool():
    first = render_many([_half("red"), "<svg"], 16, viewbox=(0, 0, 64, 64))
    assert first[0].ok and not first[1].ok
    shared = dict(render._shared)
    assert render_one(_half("blue"), 16).ok and render._shared == shared
    assert render_many([], 16) == []


@pytest.mark.parametrize("size, viewbox", [(0, None), (-3, None), (2.5, None), (True, None), (10**6, None),
                                           (16, (0, 0, 0, 1)), (16, (0, 0, 1)), (16, (0, 0, float("nan"), 1))])
def test_bad_arguments_raise(pool, size, viewbox):
    with pytest.raises(ValueError):
        pool.render_many([_half("red")], size, viewbox=viewbox)
    with pytest.raises(ValueError):
        render_many([_half("red")], size, viewbox=viewbox)
    with pytest.raises(ValueError):
        sanitize_svg(_half("red"), size=size, viewbox=viewbox)


def test_workers_score_good_renders_against_their_targets():
    from svg_rlrf.metrics import compare

    target = render_one(_half("red"), 32, viewbox=(0, 0, 64, 64)).image
    svgs = [_half("red"), _half("blue"), "<svg"]
    # the score function's module is preloaded, as `render_many` does: imported during the first render, it
    # counts against that render's timeout, which a loaded machine overran
    with RenderPool(2, preload=("svg_rlrf.metrics", "skimage.metrics")) as pool:
        results = pool.render_many(svgs, 32, viewbox=(0, 0, 64, 64), score=compare, targets=[target] * 3)
        assert results[0].scores["colour_iou"] == pytest.approx(1.0) and results[0].scores["mse"] == 0.0
        assert results[1].scores["colour_iou"] < 0.1
        assert results[1].scores == pytest.approx(compare(results[1].image, target))  # same as in the parent
        assert results[2].scores is None and not results[2].ok
        with pytest.raises(ValueError, match="one target"):
            pool.render_many(svgs, 32, score=compare, targets=[target])

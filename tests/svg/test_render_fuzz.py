"""Fuzzing the safe renderer: valid SVG documents mutated by byte flips, hostile insertions, truncation and
duplication. Whatever comes in, every answer is a RenderResult (an image of the right shape when ok, a reason
when not), sanitize_svg raises nothing but SvgError, and a batch ends within its time bound."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svg_rlrf.render import RenderPool, RenderResult, SvgError, sanitize_svg

SIZE = 32
TIMEOUT_S = 2.0
WORKERS = 2
HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 64 64">'

SEEDS = [
    HEAD + '<rect x="4" y="4" width="30" height="20" fill="#e6194b"/><circle cx="40" cy="40" r="12"/></svg>',
    HEAD + '<defs><linearGradient id="g"><stop offset="0" stop-color="red"/><stop offset="1" stop-color="blue"/>'
           '</linearGradient></defs><path d="M4 4 L60 10 L30 60 Z" fill="url(#g)" stroke="black"/></svg>',
    HEAD + '<defs><g id="a"><rect width="8" height="8" fill="green"/></g></defs><use href="#a" x="10"/>'
           '<use xlink:href="#a" x="30" y="30"/><text x="4" y="60" font-size="8">hi</text></svg>',
    HEAD + '<style>.c { fill: #3cb44b; }</style><g transform="rotate(10 32 32)" opacity="0.7">'
           '<ellipse class="c" cx="32" cy="32" rx="20" ry="10"/><polygon points="0,0 20,5 5,20"/></g></svg>',
    '<svg width="100" height="50"><polyline points="0,0 50,50 100,0" stroke="red" fill="none"/></svg>',
]

ELEMENTS = [  # well-formed fragments, inserted between tags
    '<use href="#a"/>', '<use href="#b" x="3"/>', '<g id="a"><rect width="3" height="3"/></g>',
    '<g id="b"><use href="#a"/><use href="#a"/><use href="#a"/></g>', '<g id="a"><use href="#a"/></g>',
    '<image href="http://10.255.255.1/x.png" width="9" height="9"/>', "<script>alert(1)</script>",
    "<foreignObject><p>x</p></foreignObject>", '<style>@import "http://10.255.255.1/a.css";</style>',
    '<style>rect { fill: url(file:///etc/passwd) }</style>', "<style>* { fill: red; stroke-width: 1e9 }</style>",
    '<pattern id="p" width="30000" height="30000" patternUnits="userSpaceOnUse"><rect width="1" height="1"/>'
    "</pattern>", '<pattern id="q" width="2" height="2"><rect width="1" height="1" fill="url(#q)"/></pattern>',
    '<filter id="f"><feGaussianBlur stdDeviation="1e6"/></filter>', '<mask id="m"><rect fill="url(#m)"/></mask>',
    '<tref href="#a"/>', '<text><textPath href="#a">x</textPath></text>',
    '<text font-size="1e6">\u202e\U0001f600</text>', '<text x="1e308" y="-1e308">x</text>',
    '<svg viewBox="0 0 1 1" width="1e6" height="1e6"><circle r="1"/></svg>', '<svg width="0" height="0"/>',
    '<linearGradient id="g" href="#g"/>', '<radialGradient id="g" r="-1"/>', "<![CDATA[ <svg> ]]>",
    '<path d="M0 0' + " L1 1" * 300 + '" stroke="red"/>', '<path d="M0 0 A 1e9 1e-9 0 1 1 5 5 Z"/>',
    '<path d="M0 0 L64 64 L0 64 Z" stroke="black" stroke-dasharray="0.001"/>', '<marker id="k"><use href="#k"/>'
    "</marker>", '<polygon points="nan,inf 1e309,0"/>', '<a href="https://10.255.255.1/">x</a>', "&x;", "&#0;",
    '<switch><rect systemLanguage="xx" width="3" height="3"/></switch>', "<g>" * 70 + "</g>" * 70,
]
ATTRIBUTES = [  # inserted into a start tag
    ' xlink:href="file:///etc/passwd"', ' href="data:image/png;base64,AAAA"', ' href="#a"', ' fill="url(#g)"',
    ' fill="url(#p)"', ' style="fill:url(http://10.255.255.1/)"', ' style="fill: u\\72 l(#a)"', ' width="100000"',
    ' height="1e9"', ' viewBox="0 0 0.001 0.001"', ' viewBox="0 0 -1 nan"', ' transform="scale(1e9)"',
    ' transform="matrix(0 0 0 0 0 0)"', ' stroke-dasharray="0.001"', ' stroke-width="1e7"', ' filter="url(#f)"',
    ' mask="url(#m)"', ' clip-path="url(#m)"', ' opacity="-1"', ' fill-opacity="nan"', ' font-family="\u0000"',
    ' preserveAspectRatio="xMinYMin slice"', ' id="a"', ' x="1e400"', ' r="-5"',
]
JUNK = [  # anything at all, anywhere
    '<!DOCTYPE svg [<!ENTITY x "xxxxxxxxxx">]>', '<?xml version="1.0"?>', "<svg>", "</svg>", "<!--", "-->",
    "\x00", "\xff", "\ud800", "&#x110000;", '"', "<", ">", "'", "\\", "</g>", "<g>" * 40,
]


def _inside_tags(data: bytearray) -> list[int]:
    """Positions just before a start tag's closing '>' or '/>' (where an attribute fits)."""
    spots = []
    for i in range(1, len(data)):
        if data[i:i + 2] == b"/>":
            spots.append(i)
        elif data[i:i + 1] == b">" and data[i - 1:i] not in (b"/", b"-", b"?"):
            opening = data.rfind(b"<", 0, i)
            if opening >= 0 and data[opening + 1:opening + 2] not in (b"/", b"!", b"?"):
                spots.append(i)
    return spots


def _between_tags(data: bytearray) -> list[int]:
    """Positions just after a '>' (where an element fits), the document's end excluded."""
    return [i + 1 for i in range(len(data) - 1) if data[i:i + 1] == b">"]


@st.composite
def mutated(draw) -> str | bytes:
    """A seed document after 1-4 mutations, mostly ones that keep it parseable; bytes when undecodable."""
    data = bytearray(draw(st.sampled_from(SEEDS)).encode())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["element"] * 3 + ["attribute"] * 3 + ["junk", "flip", "truncate", "duplicate"]))
        spots = _between_tags(data) if kind == "element" else _inside_tags(data) if kind == "attribute" else []
        at = draw(st.sampled_from(spots)) if spots else draw(st.integers(0, len(data)))
        vocabulary = {"element": ELEMENTS, "attribute": ATTRIBUTES, "junk": JUNK}
        if kind in vocabulary:
            data[at:at] = draw(st.sampled_from(vocabulary[kind])).encode("utf-8", "surrogatepass")
        elif kind == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            end = draw(st.integers(at, min(len(data), at + 200)))
            data[at:at] = data[at:end] * draw(st.integers(1, 20))
    try:
        return data.decode("utf-8") if draw(st.booleans()) else bytes(data)
    except UnicodeDecodeError:
        return bytes(data)


@pytest.fixture(scope="module")
def pool():
    with RenderPool(WORKERS, timeout_s=TIMEOUT_S) as p:
        yield p


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(docs=st.lists(mutated(), min_size=1, max_size=6))
def test_mutated_documents_always_get_a_result(pool, docs):
    for doc in docs:  # in process: refuse with SvgError or return a document, never anything else
        try:
            out = sanitize_svg(doc, size=SIZE, viewbox=(0, 0, 64, 64))
        except SvgError as err:
            assert str(err)
        else:
            assert out.startswith(b"<") and f'width="{SIZE}"'.encode() in out
    start = time.perf_counter()
    results = pool.render_many(docs, SIZE, viewbox=(0, 0, 64, 64))
    elapsed = time.perf_counter() - start
    assert len(results) == len(docs)
    for res in results:
        assert isinstance(res, RenderResult)
        if res.ok:
            assert res.reason is None
            assert res.image.shape == (SIZE, SIZE, 3) and res.image.dtype == np.uint8
        else:
            assert isinstance(res.reason, str) and res.reason
            assert res.image is None or res.image.shape == (SIZE, SIZE, 3)
    # each render at most the timeout, WORKERS at a time, plus worker restarts on a loaded machine
    assert elapsed < TIMEOUT_S * -(-len(docs) // WORKERS) + 5.0


def test_the_pool_still_renders_after_the_fuzzing(pool):
    res = pool.render_many([SEEDS[0]], SIZE)[0]
    assert res.ok and tuple(res.image[4, 4]) == (0xE6, 0x19, 0x4B)


@pytest.fixture(scope="module")
def reward_item(tmp_path_factory):
    from PIL import Image

    with RenderPool(1) as one:
        res = one.render_many([SEEDS[0]], 56, viewbox=(0, 0, 64, 64))[0]
    path = tmp_path_factory.mktemp("target") / "target.png"
    Image.fromarray(res.image).save(path)
    return {"images": [str(path)], "answer": SEEDS[0], "meta": {"canvas": 64}}


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(docs=st.lists(mutated(), min_size=1, max_size=4), chatter=st.sampled_from(["", "Here: ", "<svg", "\n\n"]))
def test_mutated_completions_always_get_a_reward(reward_item, docs, chatter):
    """The reward sees what a policy writes (text around the SVG included) and never raises: a score in
    [-1, 1] for each, and a reason whenever the sample failed."""
    from svg_rlrf.rewards import RenderReward

    completions = [chatter + (d.decode("utf-8", "replace") if isinstance(d, bytes) else d) for d in docs]
    scores = RenderReward()(completions, [reward_item] * len(completions))
    assert len(scores) == len(completions)
    for score in scores:
        assert -1.0 <= score.overall <= 1.0
        assert (score.overall == -1.0) == (score.reason is not None) or score.components.get("rendered") == 1.0

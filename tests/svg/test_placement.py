"""svg_rlrf.placement: primitives parsed from SVG code, matched to the reference's by centre whatever their
order, and the per-level table of an evaluated run's outputs (the CLI)."""

from __future__ import annotations

import json
import math

import pytest

from shared.config import load_config, to_yaml
from svg_rlrf.placement import chance, main, match, placement, primitives
from svg_rlrf.track import CONFIGS_DIR, SVGConfig, load_data

HEAD = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
RECT = '<rect x="4" y="8" width="20" height="10" fill="#e6194b"/>'
CIRCLE = '<circle cx="40" cy="44" r="6" fill="#4363d8"/>'
POLY = '<polygon points="50,4 60,30 30,20" fill="#3cb44b"/>'


def test_primitives_take_each_shapes_box_centre_tag_and_fill():
    got = primitives(HEAD + RECT + CIRCLE + POLY + '<path d="M 10 50 C 20 40, 30 60, 40 50" fill="none"/></svg>')
    assert [(p.tag, p.centre, p.fill) for p in got] == [
        ("rect", (14.0, 13.0), "#e6194b"), ("circle", (40.0, 44.0), "#4363d8"), ("polygon", (45.0, 17.0), "#3cb44b"),
        ("path", (25.0, 50.0), "none")]


@pytest.mark.parametrize("code", [None, "", "not svg", HEAD + "<rect",
                                  '<!DOCTYPE svg [<!ENTITY a "b">]>' + HEAD + "</svg>"])
def test_broken_or_hostile_code_has_no_primitives(code):
    assert primitives(code) == []


def test_matching_ignores_drawing_order_and_the_table_counts_per_level():
    ref = HEAD + RECT + CIRCLE + "</svg>"
    swapped = HEAD + CIRCLE + RECT + "</svg>"  # the same shapes, the other order
    moved = HEAD + RECT.replace('x="4"', 'x="10"') + "</svg>"  # one shape, 6 units right, the other left out
    assert match(primitives(swapped), primitives(ref)) == [(0, 1), (1, 0)]
    table = placement([swapped, moved, HEAD + CIRCLE + "</svg>"], [ref, ref, HEAD + CIRCLE + "</svg>"], [2, 2, 1])
    two, one = table["level2"], table["level1"]
    assert two["items"] == 2 and two["same_count"] == 0.5 and two["order_kept"] == 0.0
    assert two["centre_error"] == pytest.approx(6 / 3) and two["kind_right"] == 1.0 and two["fill_right"] == 1.0
    assert {k: v for k, v in one.items() if not k.endswith(("first_error", "_to_ink"))} == {
        "items": 1, "same_count": 1.0, "centre_error": 0.0, "centre_median": 0.0, "kind_right": 1.0,
        "fill_right": 1.0, "order_kept": 1.0}
    assert table["all"]["items"] == 3
    nothing = placement([None], [ref], [2])["level2"]
    assert nothing["same_count"] == 0 and math.isnan(nothing["centre_error"])


def test_chance_scores_answers_taken_from_other_items_of_the_same_level():
    same = HEAD + RECT + "</svg>"
    floor = chance([same, same, HEAD + CIRCLE + "</svg>"], [1, 1, 2])
    assert floor["level1"]["centre_error"] == 0.0 and floor["level1"]["fill_right"] == 1.0  # only same swapped in
    assert floor["level2"]["centre_error"] == 0.0 and floor["all"]["items"] == 3  # a level of one keeps its own
    far = [HEAD + RECT.replace('x="4"', f'x="{x}"') + "</svg>" for x in (0, 40)]
    assert chance(far, [1, 1], shuffles=20)["level1"]["centre_error"] == pytest.approx(20, abs=12)  # swapped or not


def test_cli_reads_a_runs_outputs_against_its_splits_references(tmp_path, capsys):
    cfg = load_config(SVGConfig, "default", [f"data.cache_dir={tmp_path / 'data'}", "data.n_train=8", "data.n_val=4",
                                            "data.n_test=6", "data.icons=2", "data.image_size=56"], CONFIGS_DIR)
    items = load_data(cfg.data).split("test")
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    rows = [{"id": item["id"], "svg": item["answer"] if i % 2 == 0 else None} for i, item in enumerate(items)]
    (run / "eval" / "test.outputs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    main([str(run), "--chance"])
    out = capsys.readouterr().out
    assert sum(line.startswith("| chance (another item's answer) |") for line in out.splitlines()) == 3
    assert out.splitlines()[0].startswith("| run | level | items | same_count | centre_error")
    line = next(row for row in out.splitlines() if "| all |" in row)
    assert line.split("|")[3].strip() == "6" and line.split("|")[4].strip() == "0.50"  # half the outputs are right
    assert line.split("|")[5].strip() == "0.0"  # the ones drawn are the references themselves
    with pytest.raises(FileNotFoundError, match="rlab eval"):
        main([str(run), "--split", "val"])


def test_first_shape_is_measured_against_its_own_place_and_the_centre_of_all_the_ink():
    ref = HEAD + RECT + CIRCLE + "</svg>"  # rect: centre (14, 13), box area 200; circle: centre (40, 44), area 144
    ink = ((200 * 14 + 144 * 40) / 344, (200 * 13 + 144 * 44) / 344)
    at_ink = HEAD + '<circle cx="25" cy="26" r="3" fill="#e6194b"/></svg>'  # one shape where the ink is on average
    row = placement([at_ink, ref], [ref, ref], [2, 2])["level2"]
    assert row["first_error"] == pytest.approx((11 + 13 + 0) / 2)  # the second output is the reference itself
    assert row["first_to_ink"] == pytest.approx((abs(25 - ink[0]) + abs(26 - ink[1]) + abs(14 - ink[0])
                                                 + abs(13 - ink[1])) / 2)
    assert row["reference_to_ink"] == pytest.approx(abs(14 - ink[0]) + abs(13 - ink[1]))
    assert [p.area for p in primitives(ref)] == [200.0, 144.0]
    one = placement([at_ink], [HEAD + CIRCLE + "</svg>"], [1])["level1"]  # one reference shape: not measured
    assert math.isnan(one["first_error"]) and math.isnan(one["first_to_ink"])

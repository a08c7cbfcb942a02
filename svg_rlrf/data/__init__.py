"""SVG data for the svg track, in the lab's standard on-disk format (`vlm_rl.data.loader` reads it).

- `synthetic`: seeded shapes at graded complexity levels (1-3) from a fixed palette, written with
  ``write_synthetic``; also the canonical number/attribute formatting and the writing helpers that
  the other sources share;
- `folder`: a user's folder of ``.svg`` files, normalised into the canonical frame (``normalize_svg``)
  and written with ``write_from_dir``, with rejected files counted by reason (``FolderRejects``);
- `icons`: the Font Awesome Free icons shipped by the ``fontawesomefree`` package (``write_icons``),
  the svg track's "real icon set" evaluation;
- `cli`: ``rlab data svg`` (``--synthetic``, ``--from-dir DIR`` or ``--icons fontawesome``).

Every target uses ``viewBox="0 0 C C"`` (C = canvas, 64 by default) with coordinates rounded to
``decimals`` places (0 by default) and is rendered at ``image_size`` pixels (112 by default) through
`svg_rlrf.render.render_many`. Rows are ``{id, images, question, answer, task: "svg", meta}`` with the
SVG code as ``answer`` and ``meta.canvas`` naming the frame.
"""

"""Track package `svg_rlrf` (see ../shared/DESIGN.md); its issue fills it in."""

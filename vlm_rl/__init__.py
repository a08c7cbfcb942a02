"""Track package `vlm_rl` (see ../shared/DESIGN.md); its issue fills it in."""

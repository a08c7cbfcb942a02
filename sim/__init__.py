"""Track package `sim` (see ../shared/DESIGN.md); its issue fills it in."""

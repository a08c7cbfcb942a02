"""Track package `robot` (see ../shared/DESIGN.md); its issue fills it in."""

"""Outlier generation: SONA, SD (wrong-class), global guidance, ID reconstructions."""

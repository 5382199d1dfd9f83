"""Pseudo-labels without ground truth: SimCLR features, SCAN + self-labelling, k-means."""

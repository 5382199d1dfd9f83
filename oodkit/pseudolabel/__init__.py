"""Pseudo-labels without ground truth: SimCLR features, SCAN clustering + self-labelling, k-means."""

"""Post-hoc scores, nearest neighbours, feature extraction and the score stage."""

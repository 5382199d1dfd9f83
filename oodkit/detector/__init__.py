"""Detector: timm backbone + heads, losses, training loop."""

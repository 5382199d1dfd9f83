"""Models shared by stages: timm backbones and the detector (backbone + heads)."""

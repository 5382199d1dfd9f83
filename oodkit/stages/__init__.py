"""The stages of the pipeline, one package or module each; a stage never imports another.

Stages talk to each other only through artifacts on disk (docs/architecture.md).
"""

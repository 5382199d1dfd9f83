"""Bundled recipes (YAML): the options ``oodkit sweep`` chose on validation sets."""

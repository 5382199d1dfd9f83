"""``oodkit eval``: scores artifacts in, a metrics artifact (JSON, Markdown, plots) out.

Importing the package is cheap: its ``options`` module is what the command line reads.
"""

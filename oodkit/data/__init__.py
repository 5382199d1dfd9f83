"""Data engine: dataset references, benchmarks, image tables and transforms, class lists."""

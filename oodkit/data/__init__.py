"""Dataset references, benchmarks and class-name lists."""

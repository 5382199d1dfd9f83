"""``python -m oodkit.cli``: the console script (torchrun and the tests launch it so)."""

from oodkit.cli import main

if __name__ == "__main__":
    main()

"""``python -m bench``: the command line (``bench.cli``)."""

from bench.cli import main

if __name__ == "__main__":
    main()

"""``python -m oncolens``: the same as the ``oncolens`` command."""
import sys

from oncolens.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m service.cli``: the ``isvos`` command line."""

from service.cli import main

main()

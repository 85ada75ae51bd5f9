"""`python -m atelier` is the `atelier` command."""

from atelier.cli import main

main()

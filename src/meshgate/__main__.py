"""`python -m meshgate` runs the CLI."""

from meshgate.cli import main

main()

"""`python -m allot` runs the CLI."""

from allot.cli.main import main

main()

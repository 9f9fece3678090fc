"""``python -m tamebias``: the command line."""

from .cli import app

app()

"""``python -m engine`` is the ``journey`` command."""

from engine.cli import main

main(prog_name="journey")

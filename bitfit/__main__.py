"""``python -m bitfit``: see ``bitfit.cli``."""

from __future__ import annotations

from bitfit.cli import main


def script() -> None:
    """The ``bitfit`` command: ``main``, and the process ended without its modules' teardown
    (``entry.exit_now``)."""
    from bitfit.entry import exit_now

    exit_now(main())


if __name__ == "__main__":
    script()

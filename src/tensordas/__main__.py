"""``python -m tensordas``: the same as the ``tensordas`` command."""

from tensordas.cli import main

raise SystemExit(main())

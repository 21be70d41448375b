"""``python -m tensordas.cli``: the same as the ``tensordas`` command."""

from . import main

raise SystemExit(main())

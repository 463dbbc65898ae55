"""``python -m entra_keys.cli``: the ``entra-keys`` command."""

from . import main

raise SystemExit(main())

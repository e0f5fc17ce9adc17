"""``python -m simulator`` is ``cloudhsm-local``."""

from simulator.cli import main

raise SystemExit(main())

"""``python -m robustsnn.cli`` (as ``python -m robustsnn``)."""

from robustsnn.cli import main

raise SystemExit(main())

"""``python -m robustsnn.cli`` (as ``python -m robustsnn``)."""

from robustsnn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The `excamera` command's entry point.

It only loads the command line (`shared.cli`) and runs it, so that a module that fails to import
(an incomplete or broken install, a missing optional dependency) is reported in one line that
says what is wrong, never as a traceback.
"""

from __future__ import annotations

import sys

INSTALL_HINT = "reinstall excamera (bash scripts/setup.sh, or pip install .)"


def main() -> int:
    try:
        from shared.cli import main as run

        return run()
    except ImportError as exc:
        missing = exc.name or "a module"
        print(f"excamera: cannot load {missing} ({exc}); {INSTALL_HINT}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while the command line loads, before it handles it
        print("excamera: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

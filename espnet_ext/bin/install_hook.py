"""Make ESPnet's own tools know espnet_ext's encoders (opt-in), or undo it.

Writes `espnet_ext_register.pth` into the site-packages of the Python running this command
(the active virtual environment's): from then on every Python process of that environment
imports espnet_ext at start-up (a few milliseconds; nothing heavy), so stock
`python -m espnet2.bin.asr_train` / `espnet2.bin.asr_inference` (and ESPnet's egs2 asr.sh)
accept `encoder: norm_conformer`. A file of that name that espnet_ext did not write is never
overwritten or removed.

Examples:
    python -m espnet_ext.bin.install_hook               # into this environment
    python -m espnet_ext.bin.install_hook --user        # into ~/.local/lib/pythonX.Y/site-packages
    python -m espnet_ext.bin.install_hook --uninstall
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.bin.cli import fail

PROG = "install_hook"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uninstall", action="store_true", help="remove the hook instead")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true",
                       help="the user's site-packages instead of this interpreter's own")
    where.add_argument("--site_dir", type=Path, default=None,
                       help="this site-packages directory (default: this interpreter's)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    from espnet_ext.asr.registration import (
        SITE_HOOK_FILE,
        SiteHookError,
        install_site_hook,
        site_hook_active,
        site_hook_dir,
        uninstall_site_hook,
    )

    try:
        site_dir = args.site_dir or site_hook_dir(user=args.user)
        path = site_dir / SITE_HOOK_FILE
        if args.uninstall:
            removed = uninstall_site_hook(site_dir)
            print(f"removed {path}" if removed else f"nothing to remove: no {path}")
            return 0
        written = install_site_hook(site_dir, create=args.user)
    except SiteHookError as e:
        return fail(PROG, e)
    print(f"{'installed' if written else 'already installed'}: {path}")
    if site_hook_active(site_dir):
        print(f"new {sys.executable} processes import espnet_ext: ESPnet's own tools accept "
              "its encoders (encoder: norm_conformer)")
    else:
        print(f"warning: the hook is inactive for {sys.executable}: {site_dir} is not one of its "
              "site-packages directories, or espnet_ext does not import at its start-up; ESPnet's "
              "tools run by it will not know espnet_ext's encoders", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

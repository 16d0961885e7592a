"""Check the layer-reset scan's taus against the training configs before training starts.

Exit status 0 when every requested epoch will be saved by every config, else one
`check_scan_taus: error: ...` line naming the option to change and exit status 1.

Example (what stage 4 of egs2/TEMPLATE/asr1/asr.sh runs):
    python -m espnet_ext.bin.check_scan_taus --taus 0,1,5,last --configs conf/a.yaml conf/b.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.bin.cli import run_guarded
from espnet_ext.experiment.scan_taus import ScanTausError, check_scan_taus


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--taus", required=True, help="the scan's taus: comma-separated epochs, last, all")
    p.add_argument("--configs", type=Path, nargs="+", required=True, help="training configs")
    p.add_argument("--train_args", default="",
                   help="extra training arguments (a --max_epoch there overrides the configs)")
    args = p.parse_args(argv)

    def run() -> int:
        check_scan_taus(args.taus, args.configs, args.train_args)
        return 0

    return run_guarded("check_scan_taus", run, (ScanTausError,))


if __name__ == "__main__":
    sys.exit(main())

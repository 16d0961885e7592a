"""Rebuild checkpoint 0 (the initial weights) of an ESPnet training that did not save it.

ESPnet's trainer seeds every random generator with the run's seed and builds the model right
away; this builds it again the same way from the run's config.yaml (``init:``, dtype,
``init_param``) and writes ``<exp_dir>/checkpoints/0epoch.reconstructed.pth`` with its record
``0epoch.reconstructed.json`` (reconstructed: true, seed, config hash, versions). Refused, with
the reason, where it could not be exact. Run from the directory the training ran in (paths in
config.yaml are relative to it). Prints the written file.

Examples:
    python -m espnet_ext.bin.reconstruct_init --exp_dir exp/asr_train_asr_conformer_raw_en_bpe30
    python -m espnet_ext.bin.reconstruct_init --packed_model model.zip   # unpacked to exp/packed_model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_ext.asr.registration import register_encoders
from espnet_ext.bin.cli import run_guarded, setup_logging


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", type=Path, default=None, help="trained experiment dir (with config.yaml)")
    p.add_argument("--packed_model", type=Path, default=None,
                   help="instead of --exp_dir: an ESPnet packed model (archive or model dir)")
    p.add_argument("--unpack_dir", type=Path, default=None,
                   help="where --packed_model is unpacked (default: exp/packed_<name>)")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write (default: <exp_dir>/checkpoints/0epoch.reconstructed.pth)")
    args = p.parse_args(argv)
    if (args.exp_dir is None) == (args.packed_model is None):
        p.error("give one of --exp_dir and --packed_model")
    setup_logging()
    register_encoders()

    def run() -> int:
        from espnet_ext.experiment.experiment_dir import ExperimentDir

        if args.packed_model is not None:
            from espnet_ext.experiment.packed_model import open_packed_model

            exp = open_packed_model(args.packed_model, args.unpack_dir).exp
        else:
            exp = ExperimentDir(args.exp_dir)
        print(exp.reconstruct_initial_weights(args.out))
        return 0

    from espnet_ext.experiment.experiment_dir import ExperimentError

    return run_guarded("reconstruct_init", run, (ExperimentError,))


if __name__ == "__main__":
    sys.exit(main())

"""A run's setup as a file, for Flower apps started by ``flwr run``.

``flwr run`` starts the ServerApp and the ClientApps itself (in a SuperLink's simulation
runtime or on SuperNodes), so they cannot be handed a :class:`FederatedSetup` object as the
``ray`` backend hands it to its workers. Instead ``fl_simulate prepare`` pickles the setup into
the run directory (``<out_dir>/setup.pkl``) and the apps of ``espnet_ext/federated/flwr_app``
read it from the path in their run config (key ``setup``)::

    write_setup_file(setup)                         # <out_dir>/setup.pkl
    setup = setup_from_run_config(context.run_config)

Every process that reads the file must see the run directory and the data dirs at the same
absolute paths (one machine, or a shared file system). The file is a pickle: unpickling runs
code, so read only setup files of runs you prepared.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Mapping, Optional

from espnet_ext.federated.options import FederatedSetup, OptionsError
from espnet_ext.utils.atomic import atomic_output

SETUP_FILE = "setup.pkl"
# The one run-config key of the Flower app: the absolute path of a setup file.
RUN_CONFIG_KEY = "setup"
# Flower app directory (pyproject.toml and the app module), for `flwr run`.
FLWR_APP_DIR = Path(__file__).resolve().parent / "flwr_app"


def setup_file_path(out_dir: Path) -> Path:
    """The setup file of the run in `out_dir`: ``<out_dir>/setup.pkl``."""
    return Path(out_dir) / SETUP_FILE


def write_setup_file(setup: FederatedSetup) -> Path:
    """Pickle `setup` atomically into its run directory; returns the file's path."""
    path = setup_file_path(setup.out_dir)
    with atomic_output(path) as staged:
        staged.write_bytes(pickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def read_setup_file(path: Path) -> FederatedSetup:
    """The setup pickled by :func:`write_setup_file`.

    Raises:
        OptionsError: No such file, or it holds no FederatedSetup.
    """
    path = Path(path)
    if not path.is_file():
        raise OptionsError(f"setup file {path} not found; write it with "
                           "`python -m espnet_ext.bin.fl_simulate prepare ...`")
    setup = pickle.loads(path.read_bytes())
    if not isinstance(setup, FederatedSetup):
        raise OptionsError(f"{path} holds a {type(setup).__name__}, not a federated run's setup")
    return setup


def setup_from_run_config(run_config: Mapping[str, object]) -> FederatedSetup:
    """The setup named by a Flower run config (``setup = "/abs/path/setup.pkl"``).

    Raises:
        OptionsError: The key is missing or empty, or the file cannot be read.
    """
    value = str(run_config.get(RUN_CONFIG_KEY, "") or "")
    if not value:
        raise OptionsError(f"the run config has no {RUN_CONFIG_KEY!r}: pass "
                           f"--run-config '{RUN_CONFIG_KEY}=\"/abs/path/{SETUP_FILE}\"' to flwr run")
    return read_setup_file(Path(value))


def flwr_run_command(setup_path: Path, connection: Optional[str] = None) -> str:
    """The ``flwr run`` command line that runs the prepared run at `setup_path` on the
    SuperLink connection `connection` (a ``[superlink.<name>]`` of ``$FLWR_HOME/config.toml``;
    None: its ``[superlink] default``)."""
    target = f"{FLWR_APP_DIR} {connection}" if connection else str(FLWR_APP_DIR)
    return (f"flwr run {target} --stream "
            f"--run-config '{RUN_CONFIG_KEY}=\"{Path(setup_path).resolve()}\"'")

"""Federated runs beyond one process: a Ray cluster of two nodes (``--ray_address``) and Flower's
own runtime (``flwr run`` of espnet_ext's Flower app on a SuperLink, simulated or with
SuperNodes) run the same rounds as one machine does."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch

from espnet_ext.federated.options import FederatedSetup, OptionsError
from espnet_ext.federated.setup_file import (
    FLWR_APP_DIR,
    RUN_CONFIG_KEY,
    flwr_run_command,
    read_setup_file,
    setup_file_path,
    setup_from_run_config,
    write_setup_file,
)

VENV_BIN = Path(sys.executable).parent
# The options of every run here: 2 rounds of 2 clients, a uniform plan (sub-models differ per client).
RUN_OPTIONS = ["--plans", "uniform", "--rate", "0.5", "--match_cost", "none", "--rounds", "2",
               "--clients_per_round", "2", "--batch_size", "3", "--client_lr", "0.1", "--seed", "3",
               "--no_progress"]


def _setup(tmp_path: Path, **extra) -> FederatedSetup:
    from espnet_ext.federated.plan import no_dropout_plan

    return FederatedSetup(out_dir=tmp_path, config_path=tmp_path / "config.yaml",
                          model_file=tmp_path / "model.pth", adapt_data=tmp_path / "adapt",
                          eval_data=(("adapt", tmp_path / "adapt_test"),), plan=no_dropout_plan(),
                          **extra)


def test_setup_file_round_trips_and_names_what_is_missing(tmp_path):
    setup = _setup(tmp_path, backend="flwr", rounds=3, seed=7)
    path = write_setup_file(setup)
    assert path == setup_file_path(tmp_path) == tmp_path / "setup.pkl"
    assert read_setup_file(path) == setup
    assert setup_from_run_config({RUN_CONFIG_KEY: str(path)}) == setup
    with pytest.raises(OptionsError, match="the run config has no 'setup'"):
        setup_from_run_config({})
    with pytest.raises(OptionsError, match=r"setup file .*missing.pkl not found; .*fl_simulate prepare"):
        read_setup_file(tmp_path / "missing.pkl")
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"rounds": 3}))
    with pytest.raises(OptionsError, match="holds a dict, not a federated run's setup"):
        read_setup_file(other)


def test_flwr_app_directory_is_a_valid_flower_app_reading_one_setup_path(tmp_path):
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.config import validate_config

    config = tomllib.loads((FLWR_APP_DIR / "pyproject.toml").read_text())
    assert validate_config(config, check_module=True, project_dir=FLWR_APP_DIR)[0]
    assert config["project"]["dependencies"] == []  # nothing installed at run time
    assert config["tool"]["flwr"]["app"]["config"] == {RUN_CONFIG_KEY: ""}
    assert len(build_fab_from_disk(FLWR_APP_DIR)) > 0  # what flwr run packs and sends
    setup = tmp_path / "run" / "setup.pkl"
    assert flwr_run_command(setup, "h") == (f"flwr run {FLWR_APP_DIR} h --stream "
                                            f"--run-config 'setup=\"{setup}\"'")
    assert flwr_run_command(setup).startswith(f"flwr run {FLWR_APP_DIR} --stream ")


def test_a_run_prepared_for_flwr_refuses_to_start_in_process(tmp_path):
    from espnet_ext.federated.simulation import run_federated

    with pytest.raises(OptionsError, match="started by flwr run with its setup file"):
        run_federated(_setup(tmp_path, backend="flwr"))


def _load(path: Path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    """Same scores (every round's) and bit-equal final model as the reference run."""
    a, b = _load(reference_dir / "model.pth"), _load(run_dir / "model.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref, res = (json.loads((d / "results.json").read_text()) for d in (reference_dir, run_dir))
    assert res["scores"] == ref["scores"]
    assert res["cost"]["updates"] == ref["cost"]["updates"] == 4


def _two_speaker_data(world, tmp_path: Path) -> Path:
    """The adaptation data of speakers b0 and b1 only: one client per SuperNode of two."""
    from espnet_ext.bin.fl_simulate import main

    assert main(["split", "--data_dir", str(world["adapt"]), "--out_dir", str(tmp_path / "split"),
                 "--method", "speakers", "--speakers", "b0,b1"]) == 0
    return tmp_path / "split" / "withheld"


def _run_args(world, adapt: Path, out_dir: Path) -> List[str]:
    return ["--exp_dir", str(world["exp"]), "--model_file", "latest.pth", "--adapt_data", str(adapt),
            "--eval_data", f"adapt={world['eval'][0][1]}", "--out_dir", str(out_dir), *RUN_OPTIONS]


def test_flwr_apps_read_the_setup_from_the_run_config_and_run_the_same_rounds(world, tmp_path, capsys):
    """The app module's ServerApp and ClientApp, driven in process (the ``local`` backend's
    grid), give the run of ``fl_simulate run --backend local``."""
    from espnet_ext.bin.fl_simulate import main
    from espnet_ext.federated.flwr_app import espnet_ext_fl_apps as apps
    from espnet_ext.federated.simulation import LocalGrid

    adapt = _two_speaker_data(world, tmp_path)
    assert main(["run", *_run_args(world, adapt, tmp_path / "local"), "--backend", "local"]) == 0
    capsys.readouterr()
    assert main(["prepare", *_run_args(world, adapt, tmp_path / "apps")]) == 0
    setup_path = tmp_path / "apps" / "uniform" / "setup.pkl"
    assert capsys.readouterr().out.strip() == flwr_run_command(setup_path)
    assert read_setup_file(setup_path).backend == "flwr"

    from flwr.app import Context, RecordDict

    grid = LocalGrid(apps.client_app, 2)
    run_config = {RUN_CONFIG_KEY: str(setup_path)}
    for context in grid.contexts.values():
        context.run_config = run_config
    apps.run(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config))
    _assert_same_run(tmp_path / "apps" / "uniform", tmp_path / "local" / "uniform")
    assert json.loads((tmp_path / "apps" / "uniform" / "run.json").read_text())["backend"] == "flwr"


# --- a Ray cluster of two nodes ----------------------------------------------------------------


def _remove_short_ray_dir(ray_dir: Path, tmp_path: Path) -> None:
    """Remove the short folder outside `tmp_path` that a long run dir's Ray dir links to
    (:func:`espnet_ext.federated.simulation.ray_temp_dir`)."""
    if not ray_dir.resolve().is_relative_to(tmp_path.resolve()):
        shutil.rmtree(ray_dir.resolve(), ignore_errors=True)


@pytest.mark.slow
def test_ray_cluster_of_two_nodes_runs_the_same_rounds_as_one_node(world, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    from espnet_ext.bin.fl_simulate import main
    from espnet_ext.federated.simulation import ray_temp_dir

    # Every file of the cluster (sessions, sockets, its address file) under the test's dir.
    temp = ray_temp_dir(tmp_path / "cluster")
    (temp / "ray").mkdir()  # Ray's $RAY_TMPDIR/ray, where it notes the cluster's address
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    args = _run_args(world, world["adapt"], tmp_path / "one_node") + ["--backend", "ray", "--num_workers", "2"]
    assert main(["run", *args]) == 0
    _remove_short_ray_dir(tmp_path / "one_node" / "uniform" / "ray", tmp_path)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": str(temp)})
    try:
        cluster.add_node(num_cpus=1, temp_dir=str(temp))
        cluster.wait_for_nodes()
        assert len(cluster.list_all_nodes()) == 2
        # One CPU per node and per client: Flower's Ray backend places one client actor on each.
        args = _run_args(world, world["adapt"], tmp_path / "cluster_run") + [
            "--backend", "ray", "--ray_address", cluster.address]
        assert main(["run", *args]) == 0
        assert cluster.remaining_processes_alive()
    finally:
        cluster.shutdown()
        _remove_short_ray_dir(temp, tmp_path)
    _assert_same_run(tmp_path / "cluster_run" / "uniform", tmp_path / "one_node" / "uniform")


# --- Flower's runtime: flwr run on a SuperLink ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlowerDaemons:
    """A SuperLink (and SuperNodes) on 127.0.0.1, each in a session of its own, with the
    connection ``h`` in ``$FLWR_HOME/config.toml``; :meth:`stop` terminates and waits for them."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        home = root / "flwr_home"
        home.mkdir(parents=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "h"\n\n[superlink.h]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')
        from espnet_ext.federated.simulation import ray_temp_dir

        # The simulation runtime's Ray files under the test's dir (or a short folder linked there).
        self.ray_temp = ray_temp_dir(root)
        self.env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", FLWR_HOME=str(home),
                        FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
                        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
                        # one torch thread in the ServerApp, as in the test process of the reference
                        OMP_NUM_THREADS="1", RAY_TMPDIR=str(self.ray_temp))
        self.procs: List[subprocess.Popen] = []

    def start(self, name: str, cmd: List[str], **env: str) -> None:
        with open(self.root / f"{name}.log", "w") as log:
            self.procs.append(subprocess.Popen(cmd, env=dict(self.env, **env), stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def start_superlink(self, simulation: bool) -> None:
        self.start("superlink", [str(VENV_BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                 "--port", str(self.port)] + (["--simulation"] if simulation else []))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SuperLink not healthy: {(self.root / 'superlink.log').read_text()}")
            time.sleep(0.2)

    def start_supernodes(self, count: int) -> None:
        for i in range(count):
            self.start(f"supernode{i}", [str(VENV_BIN / "flower-supernode"), "--insecure",
                                         "--superlink", f"127.0.0.1:{self.port}", "--port", str(_free_port()),
                                         "--node-config", f"partition-id={i} num-partitions={count}"],
                       FLWR_HOME=str(self.root / f"supernode{i}_home"))
        deadline = time.monotonic() + 120
        while sum(n["status"] == "online" for n in self.flwr("supernode", "ls", "h")["nodes"]) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} SuperNodes online")
            time.sleep(0.5)

    def flwr(self, *args: str) -> dict:
        r = subprocess.run([str(VENV_BIN / "flwr"), *args, "--format", "json"], env=self.env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def run(self, setup_path: Path, federation_config: Optional[str] = None) -> dict:
        """``flwr run`` of the app with this setup file; returns the run's status entry."""
        cmd = [str(VENV_BIN / "flwr"), "run", str(FLWR_APP_DIR), "h", "--stream",
               "--run-config", f'{RUN_CONFIG_KEY}="{setup_path}"']
        if federation_config:
            cmd += ["--federation-config", federation_config]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=900)
        (self.root / "flwr_run.log").write_text(r.stdout + r.stderr)
        match = re.search(r"Successfully started run (\d+)", r.stdout)
        assert r.returncode == 0 and match, r.stdout + r.stderr
        # flwr run exits 0 even when the ServerApp failed: its status says.
        return self.flwr("ls", "h", "--run-id", match.group(1))["runs"][0]

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []
        _remove_short_ray_dir(self.ray_temp, self.root)


@pytest.fixture
def flower(tmp_path):
    daemons = FlowerDaemons(tmp_path / "flower")
    yield daemons
    daemons.stop()


@pytest.fixture
def flower_deployment(tmp_path):
    daemons = FlowerDaemons(tmp_path / "flower_deployment")
    yield daemons
    daemons.stop()


@pytest.mark.slow
def test_flwr_run_under_the_simulation_runtime_and_on_two_supernodes_runs_the_same_rounds(
        world, tmp_path, flower, flower_deployment):
    from espnet_ext.bin.fl_simulate import main

    adapt = _two_speaker_data(world, tmp_path)
    assert main(["run", *_run_args(world, adapt, tmp_path / "local"), "--backend", "local"]) == 0
    reference = tmp_path / "local" / "uniform"

    # Simulation runtime: the SuperLink runs the ServerApp and one virtual SuperNode per client.
    assert main(["prepare", *_run_args(world, adapt, tmp_path / "sim")]) == 0
    flower.start_superlink(simulation=True)
    status = flower.run(setup_file_path(tmp_path / "sim" / "uniform"),
                        "num-supernodes=2 client-resources-num-cpus=1")
    assert status["status"] == "finished:completed", (status, (flower.root / "flwr_run.log").read_text())
    _assert_same_run(tmp_path / "sim" / "uniform", reference)
    flower.stop()

    # Deployment runtime: a SuperLink and two SuperNodes, partition ids 0 and 1 (the clients).
    assert main(["prepare", *_run_args(world, adapt, tmp_path / "deploy")]) == 0
    flower_deployment.start_superlink(simulation=False)
    flower_deployment.start_supernodes(2)
    status = flower_deployment.run(setup_file_path(tmp_path / "deploy" / "uniform"))
    assert status["status"] == "finished:completed", (
        status, (flower_deployment.root / "flwr_run.log").read_text())
    _assert_same_run(tmp_path / "deploy" / "uniform", reference)

"""Flower and Ray are optional (``espnet_ext[federated]``): everything else works without them.

The subprocesses run with an import blocker (a ``sitecustomize`` on PYTHONPATH) that makes
``flwr`` and ``ray`` fail to import, as in an environment where they are not installed.
"""

import json
import os
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers import make_tone_data_dir

REPO = Path(__file__).resolve().parents[2]
# Modules that need Flower at import time (the FedAvg subclass and the Flower app for `flwr run`);
# all others must import without it.
NEEDS_FLOWER = {"espnet_ext.federated.strategy", "espnet_ext.federated.flwr_app.espnet_ext_fl_apps"}
BLOCKER = '''
import sys

class _Uninstalled:
    """Finder that behaves as if flwr and ray were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flwr", "ray"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Uninstalled())
'''


@pytest.fixture
def no_flower_env(tmp_path):
    site_dir = tmp_path / "block_flower"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=600, **kwargs)


def test_every_module_but_the_flower_strategy_and_app_imports_without_flwr_and_ray(no_flower_env):
    script = '''
import importlib, json, pkgutil, sys
import espnet_ext
failed, imported = {}, []
for info in pkgutil.walk_packages(espnet_ext.__path__, "espnet_ext."):
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except Exception as e:
        failed[info.name] = f"{type(e).__name__}: {e}"
print(json.dumps({"failed": failed, "imported": imported,
                  "loaded": sorted(m for m in ("flwr", "ray") if m in sys.modules)}))
'''
    result = run(["-c", script], no_flower_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["failed"]) == NEEDS_FLOWER, report["failed"]
    assert all("No module named 'flwr" in why for why in report["failed"].values())
    assert report["loaded"] == []
    # The walk did reach the rest of the package, the federated modules included.
    for name in ("espnet_ext.federated.simulation", "espnet_ext.federated.client",
                 "espnet_ext.federated.server", "espnet_ext.bin.fl_simulate",
                 "espnet_ext.bin.layer_scan", "espnet_ext.experiment.training"):
        assert name in report["imported"]


def test_fl_simulate_without_flower_split_works_and_run_is_one_clear_error(tmp_path, no_flower_env):
    cli = ["-m", "espnet_ext.bin.fl_simulate"]
    result = run(cli + ["--help"], no_flower_env)
    assert result.returncode == 0 and "withhold a domain" in result.stdout, result.stderr[-3000:]

    data = make_tone_data_dir(tmp_path, "train", n_utts=4)
    result = run(cli + ["split", "--data_dir", str(data), "--out_dir", str(tmp_path / "split"),
                        "--method", "speakers", "--speakers", "spk0"], no_flower_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "split" / "withheld" / "utt2spk").read_text().split()[1::2] == ["spk0"] * 2

    out_dir = tmp_path / "fl"
    for backend, missing in (("ray", "Flower (flwr)"), ("local", "Flower (flwr)")):
        result = run(cli + ["run", "--exp_dir", str(tmp_path / "exp"), "--adapt_data", str(data),
                            "--out_dir", str(out_dir), "--backend", backend], no_flower_env)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith(f"fl_simulate: error: federated simulations need {missing}, "
                                    "which does not import here (No module named 'flwr')")
        assert "pip install 'espnet_ext[federated]'" in lines[-1]
        assert "Traceback" not in result.stderr
        assert not out_dir.exists()


def test_require_flower_names_what_is_missing(monkeypatch):
    from espnet_ext.federated import FederatedExtraMissing, require_flower

    pytest.importorskip("flwr")
    monkeypatch.setitem(sys.modules, "ray", None)  # None in sys.modules: import raises ImportError
    require_flower(ray=False)
    with pytest.raises(FederatedExtraMissing, match=r"need Ray, .*espnet_ext\[federated\]"):
        require_flower()


def _requirements(extra=""):
    """espnet_ext's installed requirements: the core ones, or the ones `extra` adds."""
    found = {}
    for req in map(Requirement, requires("espnet_ext")):
        in_extra = req.marker is not None and req.marker.evaluate({"extra": extra})
        if in_extra if extra else req.marker is None:
            found[req.name.lower()] = req
    return found


def test_installed_requirements_are_ranges_and_flower_is_an_extra():
    core = _requirements()
    assert {"torch", "torchaudio", "espnet"} <= set(core)
    assert not {"flwr", "ray"} & set(core), "Flower/Ray must be optional"
    pinned = [str(r) for r in core.values() if any(s.operator == "==" for s in r.specifier)]
    assert pinned == [], f"exact pins make installing into an existing environment fail: {pinned}"
    federated = _requirements("federated")
    assert federated["flwr"].extras == {"simulation"} and "ray" in federated
    assert "pytest" in _requirements("test")


def test_install_script_pins_lie_within_the_declared_ranges():
    """tools/constraints.txt (what tools/install.sh installs) satisfies setup.py's ranges."""
    pins = {}
    for line in (REPO / "tools" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower()] = req
    declared = {**_requirements("federated"), **_requirements()}
    for name, pin in pins.items():
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        if name in declared and exact:
            assert declared[name].specifier.contains(exact[0], prereleases=True), (name, exact)
    assert {"torch", "torchaudio", "espnet", "flwr", "ray"} <= set(pins)

"""`python -m espnet_ext.bin.install_hook`: ESPnet's own tools accept espnet_ext's encoders."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from helpers import make_tone_data_dir, tiny_asr_config, train_args, write_char_token_list
from espnet_ext.asr.registration import (
    SITE_HOOK_FILE,
    SITE_HOOK_TEXT,
    SiteHookError,
    install_site_hook,
    uninstall_site_hook,
)

FOREIGN = "import some_other_tool  # not espnet_ext's\n"
# One torch thread per process: the machine's cores are shared with other jobs.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600, **kwargs)


def hook_cli(python, *args):
    return run([str(python), "-m", "espnet_ext.bin.install_hook", *map(str, args)])


def loads_espnet_ext_at_start(site_dir: Path) -> bool:
    """Whether Python's site machinery, given `site_dir`, imports espnet_ext (as at start-up)."""
    probe = f"import site, sys; site.addsitedir({str(site_dir)!r}); print('espnet_ext' in sys.modules)"
    return run([sys.executable, "-c", probe]).stdout.strip() == "True"


def test_hook_file_imports_espnet_ext_and_install_is_idempotent(tmp_path):
    assert install_site_hook(tmp_path) is True
    hook = tmp_path / SITE_HOOK_FILE
    assert hook.read_text() == SITE_HOOK_TEXT
    assert loads_espnet_ext_at_start(tmp_path)
    mtime = hook.stat().st_mtime_ns
    assert install_site_hook(tmp_path) is False
    assert hook.stat().st_mtime_ns == mtime
    assert not loads_espnet_ext_at_start(tmp_path / "elsewhere")  # the probe itself discriminates
    assert uninstall_site_hook(tmp_path) is True
    assert not hook.exists()
    assert uninstall_site_hook(tmp_path) is False
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_an_older_hook_of_ours_is_updated(tmp_path):
    hook = tmp_path / SITE_HOOK_FILE
    hook.write_text(SITE_HOOK_TEXT.splitlines(keepends=True)[0] + "import espnet_ext\n")
    assert install_site_hook(tmp_path) is True
    assert hook.read_text() == SITE_HOOK_TEXT


def test_a_file_espnet_ext_did_not_write_is_never_overwritten_or_removed(tmp_path):
    hook = tmp_path / SITE_HOOK_FILE
    hook.write_text(FOREIGN)
    with pytest.raises(SiteHookError, match="was not written by espnet_ext"):
        install_site_hook(tmp_path)
    with pytest.raises(SiteHookError, match="left it in place"):
        uninstall_site_hook(tmp_path)
    assert hook.read_text() == FOREIGN
    for args in ([], ["--uninstall"]):
        result = hook_cli(sys.executable, "--site_dir", tmp_path, *args)
        assert result.returncode == 1
        assert result.stderr.startswith(f"install_hook: error: {hook} ")
        assert "not written by espnet_ext" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert hook.read_text() == FOREIGN


def test_cli_errors_and_warnings(tmp_path):
    missing = tmp_path / "no_such_dir"
    result = hook_cli(sys.executable, "--site_dir", missing)
    assert result.returncode == 1
    assert result.stderr == (f"install_hook: error: {missing} is not a directory; pass an existing "
                             "site-packages directory (this interpreter's: python -c 'import site; "
                             "print(site.getsitepackages())')\n")
    assert not missing.exists()

    # A directory Python does not read at start-up: written, with a warning that it is inactive.
    result = hook_cli(sys.executable, "--site_dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"installed: {tmp_path / SITE_HOOK_FILE}\n"
    assert result.stderr.startswith(f"warning: the hook is inactive for {sys.executable}: {tmp_path} "
                                    "is not one of its site-packages directories")
    result = hook_cli(sys.executable, "--site_dir", tmp_path, "--uninstall")
    assert (result.returncode, result.stdout) == (0, f"removed {tmp_path / SITE_HOOK_FILE}\n")
    result = hook_cli(sys.executable, "--site_dir", tmp_path, "--uninstall")
    assert result.stdout == f"nothing to remove: no {tmp_path / SITE_HOOK_FILE}\n"


def test_user_site_packages_are_created_and_read(tmp_path):
    base_python = getattr(sys, "_base_executable", sys.executable)
    if base_python == sys.executable:
        pytest.skip("needs an interpreter outside a virtual environment (one with a user site)")
    env = dict(ENV, PYTHONUSERBASE=str(tmp_path / "userbase"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                           ENV.get("PYTHONPATH", "")]))
    args = [base_python, "-m", "espnet_ext.bin.install_hook", "--user"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    hooks = list((tmp_path / "userbase").rglob(SITE_HOOK_FILE))
    assert len(hooks) == 1 and hooks[0].read_text() == SITE_HOOK_TEXT
    assert result.stdout.splitlines() == [
        f"installed: {hooks[0]}",
        f"new {base_python} processes import espnet_ext: ESPnet's own tools accept its encoders "
        "(encoder: norm_conformer)"]
    result = subprocess.run(args + ["--uninstall"], capture_output=True, text=True, env=env, timeout=600)
    assert result.stdout == f"removed {hooks[0]}\n" and not hooks[0].exists()


def test_user_site_is_refused_where_the_interpreter_ignores_it():
    if sys.prefix == sys.base_prefix:
        pytest.skip("not in a virtual environment (--user would write into the real user site)")
    result = hook_cli(sys.executable, "--user")
    assert result.returncode == 1
    assert result.stderr.startswith(f"install_hook: error: {sys.executable} does not read user "
                                    "site-packages")


@pytest.fixture
def fresh_env(tmp_path):
    """A new virtual environment that sees this one's packages but has its own site-packages.

    Its `_base.pth` adds this environment's site-packages with `site.addsitedir` (so their
    `.pth` files, e.g. the editable install of espnet_ext, are processed too); it sorts before
    the hook file, as an installed package would be on the path before the hook runs.
    """
    base = sysconfig.get_paths()["purelib"]
    if (Path(base) / SITE_HOOK_FILE).exists():
        pytest.skip(f"the hook is installed in {base} itself: a process without it cannot be made here")
    env_dir = tmp_path / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site_dir = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True).stdout.strip())
    (site_dir / "_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    return python, site_dir


def test_stock_espnet_tools_train_and_decode_norm_conformer_with_the_hook(tmp_path, fresh_env):
    python, site_dir = fresh_env
    train = make_tone_data_dir(tmp_path / "data", "train", n_utts=6, seed=0)
    valid = make_tone_data_dir(tmp_path / "data", "valid", n_utts=3, seed=1)
    tokens = write_char_token_list(tmp_path / "tokens.txt")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_asr_config(
        "norm_conformer", conv_norm_type="group_norm", conv_norm_groups=4)))
    exp = tmp_path / "exp"

    result = hook_cli(python)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"installed: {site_dir / SITE_HOOK_FILE}"
    assert "ESPnet's own tools accept its encoders" in result.stdout
    assert not (Path(sysconfig.get_paths()["purelib"]) / SITE_HOOK_FILE).exists()  # not into this env

    result = run([str(python), "-m", "espnet2.bin.asr_train",
                  *train_args(train, valid, tokens, config, exp, max_epoch=1)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load((exp / "config.yaml").read_text())["encoder"] == "norm_conformer"
    assert (exp / "1epoch.pth").is_file()
    assert "[nltk_data]" not in result.stderr

    decode = [str(python), "-m", "espnet2.bin.asr_inference", "--ngpu", "0", "--batch_size", "1",
              "--beam_size", "2", "--asr_train_config", str(exp / "config.yaml"),
              "--asr_model_file", str(exp / "1epoch.pth"),
              "--data_path_and_name_and_type", f"{valid}/wav.scp,speech,sound"]
    result = run(decode + ["--output_dir", str(tmp_path / "decode")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    hyps = (tmp_path / "decode" / "1best_recog" / "text").read_text().splitlines()
    utts = [line.split()[0] for line in (valid / "wav.scp").read_text().splitlines()]
    assert [line.split()[0] for line in hyps] == utts

    # Without the hook, stock ESPnet does not know the encoder.
    result = hook_cli(python, "--uninstall")
    assert result.stdout == f"removed {site_dir / SITE_HOOK_FILE}\n"
    result = run(decode + ["--output_dir", str(tmp_path / "decode_unhooked")], cwd=tmp_path)
    assert result.returncode != 0
    assert "--encoder must be one of" in result.stderr and "norm_conformer" in result.stderr

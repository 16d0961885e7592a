"""Registration of espnet_ext's encoders into ESPnet's ASR task.

ESPnet has no plugin mechanism: `espnet2.tasks.asr` keeps its encoders in the module-level
`encoder_choices` (a ClassChoices), which the training/decoding CLIs and
`ASRTask.build_model_from_file` consult. Adding our classes to it makes `encoder: <key>` usable
in any config built in the same process.

Importing `espnet_ext` arranges for `register_encoders()` to run as soon as `espnet2.tasks.asr`
is imported (see espnet_ext/asr/import_hook.py); this module itself imports nothing heavy. Code
that builds models from configs naming these encoders (the entry points, the model loaders)
calls `register_encoders()` itself, so it does not depend on that hook.

ESPnet's own entry points (`python -m espnet2.bin.asr_train`, `asr_inference`, ESPnet's egs2
`asr.sh`) never import espnet_ext. `install_site_hook` (CLI: `python -m
espnet_ext.bin.install_hook`) writes a one-line `.pth` file into site-packages so that every
Python process of that environment imports it at start-up; `uninstall_site_hook` removes it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Type

#: ESPnet config key (lower case) -> "module:class" of the encoder registered under it.
ENCODERS: Dict[str, str] = {
    "norm_conformer": "espnet_ext.asr.encoder.norm_conformer_encoder:NormConformerEncoder",
}


def _load_class(path: str) -> Type:
    import importlib

    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def register_encoders() -> None:
    """Add espnet_ext's encoders to `espnet2.tasks.asr.encoder_choices` (idempotent).

    Imports `espnet2.tasks.asr` if it is not imported yet (about 10 s on first import).

    Raises:
        ValueError: If a key is already registered for a different class.
    """
    from espnet2.tasks.asr import encoder_choices

    for key, path in ENCODERS.items():
        encoder_class = _load_class(path)
        registered = encoder_choices.classes.get(key)
        if registered is encoder_class:
            continue
        if registered is not None:
            raise ValueError(
                f"encoder key {key!r} is already registered in ESPnet for "
                f"{registered.__module__}.{registered.__qualname__}; cannot register "
                f"{path} under the same key"
            )
        if encoder_choices.base_type is not None and not issubclass(
            encoder_class, encoder_choices.base_type
        ):
            raise TypeError(f"{path} must subclass {encoder_choices.base_type.__name__}")
        encoder_choices.classes[key] = encoder_class


# ---- Site hook: make ESPnet's own entry points import espnet_ext ------------------------------
# ESPnet's tools (`python -m espnet2.bin.asr_train`, `asr_inference`, ESPnet's egs2 asr.sh) never
# import espnet_ext, so they reject `encoder: norm_conformer`. Python's `site` module executes the
# lines of `*.pth` files in site-packages that start with "import" at every interpreter start: a
# one-line file there imports espnet_ext (cheap), whose import hook registers the encoders when
# `espnet2.tasks.asr` is imported.

#: Name of the file `install_site_hook` writes into a site-packages directory.
SITE_HOOK_FILE = "espnet_ext_register.pth"
#: First line of that file: how a file written by espnet_ext is told from anyone else's.
SITE_HOOK_MARKER = "# espnet_ext site hook"
SITE_HOOK_TEXT = (
    f"{SITE_HOOK_MARKER}: written by `python -m espnet_ext.bin.install_hook`, removed by\n"
    "# `python -m espnet_ext.bin.install_hook --uninstall`. Python runs the next line at every\n"
    "# start: it imports espnet_ext (a few ms), which registers espnet_ext's encoders into ESPnet\n"
    "# when espnet2.tasks.asr is imported. It does nothing if espnet_ext is uninstalled.\n"
    "import importlib.util; importlib.util.find_spec('espnet_ext') and __import__('espnet_ext')\n"
)


class SiteHookError(Exception):
    """The site hook cannot be installed or removed (the message says why and what to do)."""


def site_hook_dir(user: bool = False) -> Path:
    """The site-packages directory the hook goes to by default.

    Args:
        user: The user's site-packages (``~/.local/lib/pythonX.Y/site-packages``) instead of the
            running interpreter's own (the virtual environment's, in a venv).

    Raises:
        SiteHookError: If ``user`` is set but this interpreter ignores user site-packages.
    """
    import site
    import sysconfig

    if not user:
        return Path(sysconfig.get_paths()["purelib"])
    if not site.ENABLE_USER_SITE:
        raise SiteHookError(
            f"{sys.executable} does not read user site-packages (a virtual environment, or "
            "python -s / PYTHONNOUSERSITE): install into its own site-packages, without --user"
        )
    return Path(site.getusersitepackages())


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(SITE_HOOK_MARKER)
    except OSError as e:
        raise SiteHookError(f"cannot read {path}: {e.strerror}; left it unchanged") from None


def install_site_hook(site_dir: Path, create: bool = False) -> bool:
    """Write `SITE_HOOK_FILE` into `site_dir` (idempotent).

    Args:
        site_dir: A site-packages directory (see :func:`site_hook_dir`).
        create: Create `site_dir` if it does not exist (a user site-packages directory does
            not until something is installed there).

    Returns:
        True if the file was written, False if the same hook was already there.

    Raises:
        SiteHookError: If `site_dir` does not exist or is not writable, or if a file of that
            name exists that espnet_ext did not write (it is left unchanged).
    """
    from espnet_ext.utils.atomic import write_text_atomic

    site_dir = Path(site_dir)
    if create and not site_dir.exists():
        try:
            site_dir.mkdir(parents=True)
        except OSError as e:
            raise SiteHookError(f"cannot create {site_dir}: {e.strerror}") from e
    if not site_dir.is_dir():
        raise SiteHookError(
            f"{site_dir} is not a directory; pass an existing site-packages directory (this "
            "interpreter's: python -c 'import site; print(site.getsitepackages())')"
        )
    path = site_dir / SITE_HOOK_FILE
    if path.exists():
        if not _is_ours(path):
            raise SiteHookError(
                f"{path} exists and was not written by espnet_ext (its first line is not "
                f"{SITE_HOOK_MARKER!r}); left it unchanged. Remove or rename it yourself, or "
                "install into another directory with --site_dir"
            )
        if path.read_text(encoding="utf-8") == SITE_HOOK_TEXT:
            return False
    # Written next to its destination and renamed: Python never reads a half-written hook
    # (site ignores names starting with a dot).
    try:
        write_text_atomic(path, SITE_HOOK_TEXT)
    except OSError as e:  # no permission, read-only file system, ...
        raise SiteHookError(
            f"cannot write {path}: {e.strerror}. Use a virtual environment you own, --user "
            "(your user site-packages) or --site_dir"
        ) from e
    return True


def uninstall_site_hook(site_dir: Path) -> bool:
    """Remove `SITE_HOOK_FILE` from `site_dir` if espnet_ext wrote it.

    Returns:
        True if it was removed, False if there was none.

    Raises:
        SiteHookError: If the file there was not written by espnet_ext (it is left in place),
            or cannot be removed.
    """
    path = Path(site_dir) / SITE_HOOK_FILE
    if not path.exists():
        return False
    if not _is_ours(path):
        raise SiteHookError(
            f"{path} was not written by espnet_ext (its first line is not "
            f"{SITE_HOOK_MARKER!r}); left it in place"
        )
    try:
        path.unlink()
    except OSError as e:
        raise SiteHookError(f"cannot remove {path}: {e.strerror}") from e
    return True


def site_hook_active(site_dir: Path, python: str = sys.executable) -> bool:
    """Whether the hook in `site_dir` works for `python`: a fresh process of it reads `site_dir`
    at start-up (one of its site directories) and has imported espnet_ext.

    Args:
        site_dir: Where the hook was written.
        python: The interpreter to ask (default: this one), with this process's environment.
    """
    import json
    import os
    import subprocess

    probe = (
        "import json, site, sys; dirs = site.getsitepackages() + "
        "([site.getusersitepackages()] if site.ENABLE_USER_SITE else []); "
        "print(json.dumps({'dirs': dirs, 'loaded': 'espnet_ext' in sys.modules}))"
    )
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    try:
        state = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return False
    here = os.path.realpath(site_dir)
    return state["loaded"] and any(os.path.realpath(d) == here for d in state["dirs"])

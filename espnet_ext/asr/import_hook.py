"""The import hook that `import espnet_ext` installs (see espnet_ext/__init__.py).

It wraps the loaders of two modules, whoever imports them later in the process:
``espnet2.tasks.asr`` (espnet_ext's encoders are registered right after it runs, see
:func:`espnet_ext.asr.registration.register_encoders`) and ``g2p_en`` (run with
``nltk.download`` disabled). This module imports nothing heavy: it runs in every process whose
environment has the site hook installed.
"""

from __future__ import annotations

import importlib.abc
import sys

_ASR_TASK_MODULE = "espnet2.tasks.asr"
_G2P_MODULE = "g2p_en"


class _WrappingLoader(importlib.abc.Loader):
    """Delegates to the real loader of a module; subclasses add work around `exec_module`."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)

    def __getattr__(self, name):
        # get_source, get_filename, resource readers ...: the real loader's.
        if name == "_loader":  # not yet set (e.g. while copying): avoid endless recursion
            raise AttributeError(name)
        return getattr(self._loader, name)


class _RegisterAfterExecLoader(_WrappingLoader):
    """Runs espnet2.tasks.asr, then registers our encoders into it."""

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        from espnet_ext.asr.registration import register_encoders

        register_encoders()


def _skip_nltk_download(info_or_id=None, *args, **kwargs) -> bool:
    """Stands in for `nltk.download` while g2p_en is imported: fetches nothing, returns False."""
    import logging  # here, not at the top: `import espnet_ext` runs in every hooked process

    logging.getLogger(__name__).debug(
        f"not downloading NLTK resource {info_or_id!r} on import of g2p_en; install it with "
        f"'python -m nltk.downloader {info_or_id}' if phoneme tokens (g2p_en) are needed"
    )
    return False


class _NoDownloadLoader(_WrappingLoader):
    """Runs g2p_en with `nltk.download` disabled (g2p_en downloads at import when data is missing)."""

    def exec_module(self, module) -> None:
        import nltk

        download = nltk.download
        nltk.download = _skip_nltk_download
        try:
            self._loader.exec_module(module)
        finally:
            if nltk.download is _skip_nltk_download:  # leave anyone else's replacement alone
                nltk.download = download


_WRAPPERS = {_ASR_TASK_MODULE: _RegisterAfterExecLoader, _G2P_MODULE: _NoDownloadLoader}


class _ImportHook(importlib.abc.MetaPathFinder):
    """sys.meta_path entry that only intercepts the modules in `_WRAPPERS`."""

    is_espnet_ext_import_hook = True  # recognized across reloads of this package

    def find_spec(self, fullname, path, target=None):
        wrapper = _WRAPPERS.get(fullname)
        if wrapper is None:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "is_espnet_ext_import_hook", False):
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = wrapper(spec.loader)
                return spec
        return None


def install_import_hook() -> None:
    """Registers the encoders now if ``espnet2.tasks.asr`` is already imported, and installs the
    hook (once per process) that does it when it is imported later."""
    if _ASR_TASK_MODULE in sys.modules:
        from espnet_ext.asr.registration import register_encoders

        register_encoders()
    if not any(getattr(f, "is_espnet_ext_import_hook", False) for f in sys.meta_path):
        # Kept installed so that a re-import (e.g. importlib.reload) registers again.
        sys.meta_path.insert(0, _ImportHook())


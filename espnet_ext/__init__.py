"""espnet_ext: layer importance (ambient/critical layers) and federated dropout for ESPnet ASR.

Importing this package registers its encoders (e.g. `encoder: norm_conformer`) into ESPnet's
ASR task, without importing that task itself: registration runs right after
`espnet2.tasks.asr` is imported (or at once, if it already is), so tools that never touch
ESPnet's ASR task stay fast to start.
"""

import importlib.abc
import importlib.util
import sys

_ASR_TASK_MODULE = "espnet2.tasks.asr"


class _RegisterAfterExecLoader(importlib.abc.Loader):
    """Wraps the real loader of espnet2.tasks.asr; registers our encoders once it has run."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        from espnet_ext.registration import register_encoders

        register_encoders()

    def __getattr__(self, name):
        # get_source, get_filename, resource readers ...: the real loader's.
        if name == "_loader":  # not yet set (e.g. while copying): avoid endless recursion
            raise AttributeError(name)
        return getattr(self._loader, name)


class _AsrTaskImportHook(importlib.abc.MetaPathFinder):
    """sys.meta_path entry that only intercepts `import espnet2.tasks.asr`."""

    is_espnet_ext_import_hook = True  # recognized across reloads of this package

    def find_spec(self, fullname, path, target=None):
        if fullname != _ASR_TASK_MODULE:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "is_espnet_ext_import_hook", False):
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfterExecLoader(spec.loader)
                return spec
        return None


def _install_asr_task_hook() -> None:
    if _ASR_TASK_MODULE in sys.modules:
        from espnet_ext.registration import register_encoders

        register_encoders()
    if not any(getattr(f, "is_espnet_ext_import_hook", False) for f in sys.meta_path):
        # Kept installed so that a re-import (e.g. importlib.reload) registers again.
        sys.meta_path.insert(0, _AsrTaskImportHook())


_install_asr_task_hook()

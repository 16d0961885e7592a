"""Registration of espnet_ext's encoders into ESPnet's ASR task.

ESPnet has no plugin mechanism: `espnet2.tasks.asr` keeps its encoders in the module-level
`encoder_choices` (a ClassChoices), which the training/decoding CLIs and
`ASRTask.build_model_from_file` consult. Adding our classes to it makes `encoder: <key>` usable
in any config built in the same process.

Importing `espnet_ext` arranges for `register_encoders()` to run as soon as `espnet2.tasks.asr`
is imported (see espnet_ext/__init__.py); this module itself imports nothing heavy.
"""

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

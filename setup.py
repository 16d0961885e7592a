"""espnet_ext: layer importance (ambient/critical layers) and federated dropout for ESPnet ASR.

Requirements are the ranges the code supports, so that espnet_ext installs into an existing
ESPnet environment without replacing its torch or ESPnet. The exact versions tested together are
pinned separately in tools/constraints.txt (what tools/install.sh installs).

    pip install -e .                  # the core: encoders, layer-reset scan, analysis, recipes
    pip install -e '.[federated]'     # + Flower and Ray for the federated simulations
    pip install -e '.[federated,test]'
"""

from setuptools import find_packages, setup

setup(
    name="espnet_ext",
    version="0.1.0",
    description=(
        "ESPnet recipe extension: group-norm Conformer, layer-reset scoring, "
        "importance-targeted federated dropout"
    ),
    packages=find_packages(include=["espnet_ext", "espnet_ext.*"]),
    # The Flower app directory that `flwr run` packs needs its pyproject.toml next to the module.
    package_data={"espnet_ext.federated.flwr_app": ["pyproject.toml"]},
    # Tested on 3.11; the federated extra needs 3.11 (Flower 1.42 does).
    python_requires=">=3.10",
    install_requires=[
        # norm_conformer uses module hooks with `with_kwargs` and `always_call` (torch 2.0).
        "torch>=2.0",
        # espnet2.tasks.asr imports torchaudio, but ESPnet does not require it; install the build
        # that matches your torch (pip would otherwise pull a torch to match the newest one).
        "torchaudio>=2.0",
        # ConformerEncoder's `qk_norm` and `use_flash_attn` options (passed on by
        # norm_conformer) first appear in ESPnet 202412.
        "espnet>=202412",
        # ESPnet 202412 pins 0.1.97; espnet_ext calls only SentencePieceTrainer.train.
        "sentencepiece>=0.1.97",
        "typeguard>=2.13",
        "kaldiio>=2.18",
        "numpy>=1.23,<3",
        "pyyaml>=6",
        "soundfile>=0.12",
        "jiwer>=3,<5",
        "matplotlib>=3.7",
        "tqdm>=4.60",
    ],
    extras_require={
        # Flower's Message API and the in-process runtime pieces used here are tested with 1.42;
        # `simulation` brings Ray, which espnet_ext also calls directly (init/shutdown).
        "federated": ["flwr[simulation]>=1.42,<2", "ray"],
        "test": ["pytest>=8", "pytest-timeout>=2", "packaging"],
    },
)

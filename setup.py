"""espnet_ext: layer importance (ambient/critical layers) and federated dropout for ESPnet ASR."""

from setuptools import find_packages, setup

setup(
    name="espnet_ext",
    version="0.1.0",
    description=(
        "ESPnet recipe extension: group-norm Conformer, layer-reset scoring, "
        "importance-targeted federated dropout"
    ),
    packages=find_packages(include=["espnet_ext", "espnet_ext.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=[
        "torch==2.11.0",
        "torchaudio==2.11.0",
        "espnet==202511",
        "sentencepiece>=0.2,<0.3",
        "kaldiio>=2.18",
        "numpy>=1.23,<3",
        "pyyaml>=6",
        "soundfile>=0.12",
        "jiwer>=3,<5",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "flwr[simulation]==1.42.0",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2"]},
)

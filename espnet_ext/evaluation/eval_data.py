"""Evaluation sets held in memory: audio read once, references, length-sorted batches.

Audio is read as ESPnet's `sound` data type reads it (soundfile, float32 in [-1, 1], mono;
:func:`espnet_ext.data.audio.read_recording`), so that features and hypotheses match
`espnet2.bin.asr_inference` on the same data dir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from espnet_ext.data.audio import utterance_audio
from espnet_ext.data.kaldi import DataDirError, KaldiDataDir


@dataclasses.dataclass
class EvalSet:
    """One data dir, loaded.

    Attributes:
        name: Short name (the data dir's base name unless given), used in output files.
        data_dir: The Kaldi data dir.
        keys: Utterance ids, in C byte order.
        refs: Utterance id -> reference transcript.
        audio: Waveforms (float32, mono), in the order of `keys`.
        sample_rate: Sampling rate in Hz (the same for every utterance).
    """

    name: str
    data_dir: Path
    keys: List[str]
    refs: Dict[str, str]
    audio: List[np.ndarray]
    sample_rate: int

    @property
    def num_samples(self) -> List[int]:
        return [len(a) for a in self.audio]

    @property
    def hours(self) -> float:
        return sum(self.num_samples) / self.sample_rate / 3600.0


def load_eval_set(data_dir: Path, name: Optional[str] = None) -> EvalSet:
    """Read a Kaldi data dir (wav.scp, text, optional segments) and all its audio.

    Args:
        data_dir: The data dir.
        name: Set name (default: the directory's name).

    Raises:
        DataDirError: Missing files, unreadable or multi-channel audio, mixed sampling rates,
            or an utterance without a transcript.
    """
    data_dir = Path(data_dir)
    d = KaldiDataDir.read(data_dir)
    keys = d.utterances
    missing = [u for u in keys if u not in d.text]
    if missing:
        raise DataDirError(f"{data_dir}/text: utterance '{missing[0]}' has no transcript")
    audio, rates = [], set()
    for _, samples, rate in utterance_audio(d, keys, data_dir):
        audio.append(samples)
        rates.add(rate)
    if len(rates) > 1:
        raise DataDirError(f"{data_dir}: recordings have different sampling rates {sorted(rates)}")
    if not keys:
        raise DataDirError(f"{data_dir}: no utterances")
    return EvalSet(
        name=name or data_dir.name,
        data_dir=data_dir,
        keys=keys,
        refs={u: d.text[u] for u in keys},
        audio=audio,
        sample_rate=rates.pop(),
    )


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> List[List[int]]:
    """Indices grouped into batches of similar length (longest first), to keep padding small.

    Args:
        lengths: Length of each item (e.g. samples).
        batch_size: Maximum items per batch (>= 1).

    Returns:
        Batches of indices into `lengths`; every index appears once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

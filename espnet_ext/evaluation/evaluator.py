"""Scoring many weight variants of one loaded model, recomputing only what a variant changes.

Audio is loaded once; features (frontend + normalization of the trained model) are computed
once per utterance, then padded into length-sorted batches. For every batch, a **prefix cache**
holds the trained model's encoder state at one level (see
:mod:`espnet_ext.evaluation.encoder_stages`): a variant that changes encoder block k starts from
the cached input of block k, so blocks 0..k-1 are not recomputed; a variant that changes only
the CTC layer or the decoder starts from the cached encoder output. Variants are meant to be
visited in increasing level order: the cache then only ever moves forward, by one trained block
per batch and level, and holds one level at a time (memory: about one hidden state per frame
of the sets, plus the features). The cache is kept **per batch**: a batch is advanced only when
a variant is evaluated on it, so a variant scored on a few batches (the adaptive scan) costs
only those batches' trained prefix.

Batches are length sorted over the whole set by default. With ``chunks`` (the adaptive scan:
consecutive slices of a seeded utterance order), each chunk is length sorted into batches of
its own, so the first k chunks are exactly a set of whole batches.

The weights of a variant are swapped into the model for its evaluation only
(:class:`espnet_ext.layers.reset.WeightSwap`); the cache is always advanced with the trained
weights. A pass of the trained model itself (the scan's baseline: no values swapped in) runs
from the cache too, and leaves it at level 0 or beyond: the input layer (the most expensive stage
per batch) then runs once per batch for the baseline and every later variant together.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.nn.utils.rnn import pad_sequence

from espnet_ext.evaluation.encoder_stages import LEVEL_AUDIO, LEVEL_FEATS, EncoderStages
from espnet_ext.evaluation.eval_data import EvalSet, length_sorted_batches
from espnet_ext.layers.reset import WeightSwap

REUSE_MODES = ("prefix", "none")


class Evaluator:
    """Hypotheses of weight variants of a model on evaluation sets.

    Args:
        model: The ESPnet ASR model (eval mode, on `device`), holding the trained weights.
        sets: Evaluation sets (audio in memory).
        decoder: ``decode_batch(enc, enc_lens) -> List[str]`` (see
            :mod:`espnet_ext.evaluation.decoders`).
        batch_size: Utterances per batch (batches are length sorted and padded).
        device: Device of the model.
        reuse: ``prefix`` (reuse features and the cached encoder prefix) or ``none`` (every
            variant from audio: frontend, encoder, decoding; for comparisons).
        chunks: Per set, a partition of its utterance indices into chunks, each batched on its
            own (default: one chunk, the whole set).

    Raises:
        ValueError: An utterance too short for the encoder's subsampling, or a bad option.
    """

    def __init__(self, model: torch.nn.Module, sets: Sequence[EvalSet], decoder, batch_size: int = 16,
                 device: str = "cpu", reuse: str = "prefix",
                 chunks: Optional[Sequence[Sequence[Sequence[int]]]] = None):
        if reuse not in REUSE_MODES:
            raise ValueError(f"reuse must be one of {', '.join(REUSE_MODES)}, got {reuse!r}")
        self.model = model
        self.sets = list(sets)
        self.decoder = decoder
        self.device = torch.device(device)
        self.reuse = reuse
        self.stages = EncoderStages(model)
        self.swap = WeightSwap(model)
        if chunks is None:
            chunks = [[list(range(len(s.audio)))] for s in self.sets]
        if len(chunks) != len(self.sets):
            raise ValueError(f"{len(chunks)} chunk lists for {len(self.sets)} sets")
        self.batches: List[List[List[int]]] = []
        # chunk_batches[s][k]: indices into batches[s] of chunk k's batches.
        self.chunk_batches: List[List[List[int]]] = []
        for s, set_chunks in zip(self.sets, chunks):
            flat = sorted(i for c in set_chunks for i in c)
            if flat != list(range(len(s.audio))):
                raise ValueError(f"{s.name}: chunks must partition the set's {len(s.audio)} utterances")
            lengths = s.num_samples
            batches, per_chunk = [], []
            for c in set_chunks:
                sub = length_sorted_batches([lengths[i] for i in c], batch_size)
                per_chunk.append(list(range(len(batches), len(batches) + len(sub))))
                batches += [[c[j] for j in b] for b in sub]
            self.batches.append(batches)
            self.chunk_batches.append(per_chunk)
        self._feats = [self._batch_features(i) for i in range(len(self.sets))]
        if self.stages.block_reuse:
            self.stages.self_check(*self._feats[0][0])
        self._state = [list(f) for f in self._feats]
        self._levels = [[LEVEL_FEATS] * len(f) for f in self._feats]

    # -- levels ------------------------------------------------------------------------------

    @property
    def level_output(self) -> int:
        """Level of the encoder output (a variant of the CTC layer or the decoder starts here)."""
        return self.stages.level_output

    def effective_level(self, level: int) -> int:
        """The level a variant really starts from, given what can be reused."""
        if self.reuse == "none" or level <= LEVEL_AUDIO:
            return LEVEL_AUDIO
        if level >= self.level_output:
            return self.level_output
        if level >= 0 and not self.stages.block_reuse:
            return LEVEL_FEATS
        return level

    # -- features ----------------------------------------------------------------------------

    @torch.no_grad()
    def _batch_features(self, set_idx: int, batch_indices: Optional[Sequence[int]] = None
                        ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Padded features of batches of a set (default: all), computed one utterance at a time.

        One utterance at a time, as ``asr_inference`` does, so that features never depend on
        the padding of a batch.
        """
        s = self.sets[set_idx]
        if batch_indices is None:
            batch_indices = range(len(self.batches[set_idx]))
        wanted = [self.batches[set_idx][b] for b in batch_indices]
        min_frames = self.stages.min_frames()
        per_utt: Dict[int, torch.Tensor] = {}
        for i in (i for batch in wanted for i in batch):
            speech = torch.as_tensor(s.audio[i], device=self.device).unsqueeze(0)
            lens = torch.tensor([speech.size(1)], device=self.device)
            feats, flens = self.stages.features(speech, lens)
            n = int(flens[0])
            if n < min_frames:
                raise ValueError(
                    f"{s.data_dir}: utterance '{s.keys[i]}' has {n} feature frames; the encoder's "
                    f"subsampling needs at least {min_frames}: remove it from the data dir"
                )
            per_utt[i] = feats[0, :n]
        out = []
        for batch in wanted:
            items = [per_utt[i] for i in batch]
            lens = torch.tensor([x.size(0) for x in items], device=self.device)
            out.append((pad_sequence(items, batch_first=True), lens))
        return out

    # -- the prefix cache --------------------------------------------------------------------

    def _cached(self, s: int, b: int, level: int):
        """The trained state of batch b of set s at `level` (> LEVEL_FEATS), advancing its cache.

        Must be called with the trained weights in the model.
        """
        if self._levels[s][b] > level:  # out of order: restart this batch from its features
            self._state[s][b], self._levels[s][b] = self._feats[s][b], LEVEL_FEATS
        if self._levels[s][b] < level:
            self._state[s][b] = self.stages.run(self._levels[s][b], self._state[s][b], level)
            self._levels[s][b] = level
        return self._state[s][b]

    # -- evaluation --------------------------------------------------------------------------

    def _run(self, level: int, values: Mapping[str, torch.Tensor],
             consume: Callable[[int, int, torch.Tensor, torch.Tensor], None],
             batches: Optional[Mapping[str, Sequence[int]]] = None) -> None:
        level = self.effective_level(level)
        todo = []
        for s, data in enumerate(self.sets):
            if batches is None:
                todo.append((s, list(range(len(self.batches[s])))))
            elif data.name in batches:
                todo.append((s, list(batches[data.name])))
        starts = {}
        if level > LEVEL_FEATS:  # trained prefixes first, before the variant's weights go in
            for s, bs in todo:
                for b in bs:
                    starts[(s, b)] = self._cached(s, b, level)
        # The trained model (nothing swapped in) is its own prefix: start where the cache is.
        trained_pass = (level == LEVEL_FEATS and not values and self.reuse == "prefix"
                        and self.stages.block_reuse)
        if trained_pass:
            for s, bs in todo:
                for b in bs:
                    at = max(self._levels[s][b], 0)
                    starts[(s, b)] = (at, self._cached(s, b, at))
        with self.swap.swapped(values):
            for s, bs in todo:
                feats = dict(zip(bs, self._batch_features(s, bs))) if level == LEVEL_AUDIO else None
                for b in bs:
                    if level == LEVEL_AUDIO:
                        start, state = LEVEL_FEATS, feats[b]
                    elif trained_pass:
                        start, state = starts[(s, b)]
                    elif level == LEVEL_FEATS:
                        start, state = LEVEL_FEATS, self._feats[s][b]
                    else:
                        start, state = level, starts[(s, b)]
                    enc, enc_lens = self.stages.run(start, state, self.level_output)
                    consume(s, b, enc, enc_lens)

    def hypotheses(self, level: int = LEVEL_FEATS,
                   values: Optional[Mapping[str, torch.Tensor]] = None,
                   batches: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, Dict[str, str]]:
        """Hypotheses of the model with `values` swapped in.

        Args:
            level: The lowest level the variant changes (LEVEL_AUDIO for the frontend,
                LEVEL_FEATS for the encoder input layer, k for encoder block k, N for the final
                norm, N+1 for the CTC layer or decoder). Lower is always correct, just slower.
            values: State-dict entries of the variant ({} or None: the trained model).
            batches: {set name: batch indices} to evaluate (default: every batch of every set;
                sets not named are skipped). See :attr:`chunk_batches`.

        Returns:
            {set name: {utterance id: hypothesis text}} of the utterances evaluated.
        """
        out: Dict[str, Dict[str, str]] = {s.name: {} for s in self.sets}

        def consume(s, b, enc, enc_lens):
            texts = self.decoder.decode_batch(enc, enc_lens)
            keys = self.sets[s].keys
            for i, text in zip(self.batches[s][b], texts):
                out[self.sets[s].name][keys[i]] = text

        self._run(level, values or {}, consume, batches)
        return {name: hyps for name, hyps in out.items() if batches is None or name in batches}

    def encoder_outputs(
        self, level: int = LEVEL_FEATS, values: Optional[Mapping[str, torch.Tensor]] = None
    ) -> Dict[str, Dict[str, torch.Tensor]]:
        """Encoder output (valid frames, CPU) per utterance, for checks: {set: {utt: (T, D)}}."""
        out: Dict[str, Dict[str, torch.Tensor]] = {s.name: {} for s in self.sets}

        def consume(s, b, enc, enc_lens):
            keys = self.sets[s].keys
            for j, i in enumerate(self.batches[s][b]):
                out[self.sets[s].name][keys[i]] = enc[j, : int(enc_lens[j])].cpu()

        self._run(level, values or {}, consume)
        return out

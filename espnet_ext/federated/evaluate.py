"""Server-side evaluation of the global model: WER and CER on the evaluation sets.

The model is built and the audio and features are loaded once; each evaluation swaps the
global model's tensors into the model (:class:`espnet_ext.layers.reset.WeightSwap` through the
scan's :class:`espnet_ext.analysis.evaluator.Evaluator`) and decodes with greedy CTC, the
scan's fast scoring mode. Features are reused across evaluations because federated training
changes no frontend or normalization parameters (they are fixed buffers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch

from espnet_ext.data.kaldi import kaldi_sort_key

Scores = Dict[str, Dict[str, float]]


class GlobalModelEvaluator:
    """WER/CER of global-model states on fixed evaluation sets.

    Args:
        config_path: The run's training config.
        weights: The pre-trained state dict (the model's own values between evaluations).
        eval_data: (name, Kaldi data dir) pairs.
        device: ``cpu`` or ``cuda``.
        batch_size: Utterances per batch.
    """

    def __init__(self, config_path: Path, weights: Mapping[str, torch.Tensor],
                 eval_data: Sequence[Tuple[str, Path]], device: str = "cpu", batch_size: int = 16):
        from espnet_ext.analysis.decoders import CtcGreedyDecoder
        from espnet_ext.analysis.eval_data import load_eval_set
        from espnet_ext.analysis.evaluator import Evaluator
        from espnet_ext.federated.modelio import build_asr_model, read_config

        config = read_config(config_path)
        self.model = build_asr_model(config_path, device="cpu")
        self.model.load_state_dict(weights, strict=True)
        self.model.to(device).eval()
        decoder = CtcGreedyDecoder(self.model, config.get("token_type", "bpe"), config.get("bpemodel"))
        self.sets = [load_eval_set(Path(path), name) for name, path in eval_data]
        self.evaluator = Evaluator(self.model, self.sets, decoder, batch_size=batch_size,
                                   device=device, reuse="prefix")
        self.device = device

    def hypotheses(self, state: Mapping[str, torch.Tensor]) -> Dict[str, Dict[str, str]]:
        """{set: {utterance: hypothesis}} of the model holding `state` (sent entries)."""
        from espnet_ext.analysis.encoder_stages import LEVEL_FEATS

        values = {k: v.to(self.device) for k, v in state.items()}
        with torch.no_grad():
            return self.evaluator.hypotheses(LEVEL_FEATS, values)

    def evaluate(self, state: Mapping[str, torch.Tensor],
                 hyp_dir: Optional[Path] = None) -> Scores:
        """{set: {"WER": %, "CER": %}}; hypotheses written to ``<hyp_dir>/<set>/text`` if given."""
        from espnet_ext.scoring import score_texts

        hyps = self.hypotheses(state)
        out: Scores = {}
        for s in self.sets:
            h = hyps[s.name]
            out[s.name] = {"WER": round(score_texts(s.refs, h, "word").error_rate, 2),
                           "CER": round(score_texts(s.refs, h, "char").error_rate, 2)}
            if hyp_dir is not None:
                path = Path(hyp_dir) / s.name / "text"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{k} {h[k]}".rstrip() + "\n"
                                        for k in sorted(h, key=kaldi_sort_key)), encoding="utf-8")
        logging.info(f"evaluation: {out}")
        return out

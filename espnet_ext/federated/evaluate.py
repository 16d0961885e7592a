"""Server-side evaluation of the global model: WER and CER on the evaluation sets.

The model is built and the audio and features are loaded once; each evaluation swaps the
global model's tensors into the model (:class:`espnet_ext.layers.reset.WeightSwap` through the
evaluation layer's :class:`espnet_ext.evaluation.evaluator.Evaluator`), decodes with greedy CTC
(:class:`espnet_ext.evaluation.decoders.CtcGreedyDecoder`) and counts errors with
:mod:`espnet_ext.evaluation.scoring`. Features are reused across evaluations because federated
training changes no frontend or normalization parameters (they are fixed buffers).

The final model's per-utterance error counts go to ``per_utt.tsv`` next to ``results.json``
(:func:`write_per_utterance`): paired comparisons of runs on the same test utterances
(:mod:`espnet_ext.federated.bootstrap`) need them, not only the corpus-level rates.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from espnet_ext.data.kaldi import kaldi_sort_key

if TYPE_CHECKING:
    from espnet_ext.evaluation.scoring import ErrorCounts
from espnet_ext.utils.atomic import write_text_atomic

Scores = Dict[str, Dict[str, float]]
PER_UTT_FILE = "per_utt.tsv"
PER_UTT_COLUMNS = ("set", "utt", "ref_words", "word_errors", "ref_chars", "char_errors")


def per_utterance_counts(refs: Mapping[str, str], hyps: Mapping[str, str]) -> List[Tuple[str, int, int, int, int]]:
    """(utterance, reference words, word errors, reference characters, character errors) per
    utterance, in Kaldi order, counted as :func:`espnet_ext.evaluation.scoring.score_texts` counts them (so
    the sums give the set's WER and CER exactly); a missing hypothesis is empty."""
    from espnet_ext.evaluation.scoring import utterance_counts

    return _per_utterance_rows(utterance_counts(refs, hyps, "word"), utterance_counts(refs, hyps, "char"))


def _per_utterance_rows(words: Mapping[str, "ErrorCounts"],
                        chars: Mapping[str, "ErrorCounts"]) -> List[Tuple[str, int, int, int, int]]:
    """:func:`per_utterance_counts` rows from each utterance's word and character counts."""
    return [(k, words[k].ref_tokens, words[k].errors, chars[k].ref_tokens, chars[k].errors)
            for k in sorted(words, key=kaldi_sort_key)]


def write_per_utterance(path: Path, counts: Mapping[str, List[Tuple[str, int, int, int, int]]]) -> Path:
    """Write ``per_utt.tsv`` (columns :data:`PER_UTT_COLUMNS`; counts in words and characters)
    atomically from {set: :func:`per_utterance_counts`}."""
    path = Path(path)
    lines = ["\t".join(PER_UTT_COLUMNS)]
    for name, rows in counts.items():
        lines += ["\t".join([name] + [str(v) for v in row]) for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_per_utterance(path: Path) -> Dict[str, Dict[str, Tuple[int, int, int, int]]]:
    """{set: {utterance: (reference words, word errors, reference characters, character errors)}}
    from a ``per_utt.tsv``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Another header or a malformed line (named with its line number).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != PER_UTT_COLUMNS:
        raise ValueError(f"{path}: not a per-utterance error file (header must be "
                         f"{' '.join(PER_UTT_COLUMNS)})")
    out: Dict[str, Dict[str, Tuple[int, int, int, int]]] = {}
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            if len(cells) != len(PER_UTT_COLUMNS):
                raise ValueError
            out.setdefault(cells[0], {})[cells[1]] = tuple(int(v) for v in cells[2:])
        except ValueError:
            raise ValueError(f"{path}:{n}: expected {len(PER_UTT_COLUMNS)} tab-separated fields "
                             f"({' '.join(PER_UTT_COLUMNS)}), got {line!r}") from None
    return out


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
        from espnet_ext.evaluation.decoders import CtcGreedyDecoder
        from espnet_ext.evaluation.eval_data import load_eval_set
        from espnet_ext.evaluation.evaluator import Evaluator
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
        from espnet_ext.evaluation.encoder_stages import LEVEL_FEATS

        values = {k: v.to(self.device) for k, v in state.items()}
        with torch.no_grad():
            return self.evaluator.hypotheses(LEVEL_FEATS, values)

    def evaluate(self, state: Mapping[str, torch.Tensor], hyp_dir: Optional[Path] = None,
                 per_utt: Optional[Path] = None) -> Scores:
        """{set: {"WER": %, "CER": %}}; hypotheses written to ``<hyp_dir>/<set>/text`` and
        per-utterance error counts to `per_utt` (:func:`write_per_utterance`) if given."""
        from espnet_ext.evaluation.scoring import score_texts, sum_counts, utterance_counts

        hyps = self.hypotheses(state)
        out: Scores = {}
        counts = {}
        for s in self.sets:
            h = hyps[s.name]
            if per_utt is None:
                words, chars = score_texts(s.refs, h, "word"), score_texts(s.refs, h, "char")
            else:
                # Each utterance is aligned once: the set's totals are the sums of its rows.
                by_word, by_char = utterance_counts(s.refs, h, "word"), utterance_counts(s.refs, h, "char")
                counts[s.name] = _per_utterance_rows(by_word, by_char)
                words, chars = sum_counts(by_word.values()), sum_counts(by_char.values())
            out[s.name] = {"WER": round(words.error_rate, 2), "CER": round(chars.error_rate, 2)}
            if hyp_dir is not None:
                path = Path(hyp_dir) / s.name / "text"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{k} {h[k]}".rstrip() + "\n"
                                        for k in sorted(h, key=kaldi_sort_key)), encoding="utf-8")
        if per_utt is not None:
            write_per_utterance(per_utt, counts)
        logging.info(f"evaluation: {out}")
        return out

"""Evaluation of weight variants of one model: audio -> features -> encoder stages -> CTC or
beam decoding -> error counts, and paired comparisons of two variants' counts.

Used by both the layer-reset scan and the federated code; it imports neither.
Modules: `eval_data` (an evaluation set in memory), `encoder_stages` (the encoder as a staged
forward), `evaluator` (features and prefix cache), `ctc_greedy`/`decoders` (scoring modes),
`scoring` (WER/CER counts), `tokens` (token lists and text normalization), `bootstrap`
(paired bootstrap intervals), `inference_inputs` (audio checks before ESPnet's own decoding).
"""

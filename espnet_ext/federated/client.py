"""The federated client: train the received sub-model on one speaker's data with ESPnet's loss.

A client (a Flower ``ClientApp``) receives a sub-model (its tensors and, per droppable module,
how many units it keeps), resizes its own copy of the model to that structure
(:func:`espnet_ext.federated.submodel.shrink_model_to_structure_`), loads the tensors, trains
locally for some epochs or steps with its own optimizer, and returns the trained tensors with
the number of examples and what the update cost (:mod:`espnet_ext.federated.cost`). The entries
of layer groups the server names frozen (a ``frozen`` plan sends their state-dict keys) are loaded
but not trained (``requires_grad`` off: their parameters do not change and need no gradient or
optimizer state) and not returned.

Local training is ESPnet's model ``forward`` (CTC + attention loss, SpecAugment if configured)
on batches made by ESPnet's preprocessor (tokenizer) and collate function, in a plain loop:
shuffle (seeded), batches of `batch_size` utterances, gradient clipping, optimizer step.
Randomness (shuffling, dropout, SpecAugment) is seeded by (run seed, round, client), so a
resumed run trains every client exactly as an uninterrupted one.

Which data a client trains on is a property of the node, not of the message: a node trains on
the speaker of its own partition id (``node_config["partition-id"]``).
"""

from __future__ import annotations

import copy
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from espnet_ext.data.audio import utterance_audio
from espnet_ext.experiment.cpu_autocast import autocast_dtype, cpu_autocast
from espnet_ext.experiment.cpu_dropout import CPU_DROPOUT_KINDS, cpu_fast_dropout
from espnet_ext.experiment.cpu_layout import channels_last_convs
from espnet_ext.federated.cost import PeakMemory, optimizer_state_factor, training_state_bytes

CLIENT_OPTIMIZERS = ("sgd", "adam")
INJECTED_FAILURE = "injected client failure"


@dataclasses.dataclass(frozen=True)
class LocalTraining:
    """How a client trains locally.

    Attributes:
        epochs: Passes over the client's data (used when `steps` is 0).
        steps: Exactly this many optimizer steps, cycling over the data (0: use `epochs`).
        batch_size: Utterances per batch.
        optim: ``sgd`` or ``adam`` (its state starts fresh every round).
        lr: Client learning rate.
        momentum: SGD momentum.
        grad_clip: Gradient-norm clipping threshold (ESPnet's default 5; <= 0: none).
        cpu_autocast: ``none`` or ``bf16``: the forward under CPU bf16 autocast, as central
            training's ``--cpu_autocast`` (:mod:`espnet_ext.experiment.cpu_autocast`; ignored on
            a GPU).
        cpu_dropout: ``torch`` or ``fast``: dropout masks from 16-bit random integers, as central
            training's ``--cpu_dropout`` (:mod:`espnet_ext.experiment.cpu_dropout`; CPU only).
        cpu_channels_last: Conv2d weights channels-last while the client trains, as central
            training's ``--cpu_channels_last`` (:mod:`espnet_ext.experiment.cpu_layout`; CPU only).
    """

    epochs: int = 1
    steps: int = 0
    batch_size: int = 4
    optim: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    grad_clip: float = 5.0
    cpu_autocast: str = "none"
    cpu_dropout: str = "torch"
    cpu_channels_last: bool = False

    #: Options added after runs were made, with the value those runs trained with: an option at
    #: that value is left out of the identity, so those runs keep their identity (and resume).
    _ADDED_LATER = {"cpu_autocast": "none", "cpu_dropout": "torch", "cpu_channels_last": False}

    def identity(self) -> Dict[str, object]:
        """The options as a dict for a run's identity (options added later only when not at their
        old behaviour's value)."""
        d = dataclasses.asdict(self)
        for key, old in self._ADDED_LATER.items():
            if d[key] == old:
                del d[key]
        return d

    def validate(self) -> None:
        if self.optim not in CLIENT_OPTIMIZERS:
            raise ValueError(f"client optimizer must be one of {', '.join(CLIENT_OPTIMIZERS)}, "
                             f"got {self.optim!r}")
        if self.steps < 0 or self.epochs < 0 or (self.steps == 0 and self.epochs == 0):
            raise ValueError("local training needs epochs >= 1 or steps >= 1")
        if self.batch_size < 1:
            raise ValueError(f"client batch size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"client learning rate must be > 0, got {self.lr}")
        autocast_dtype(self.cpu_autocast)
        if self.cpu_dropout not in CPU_DROPOUT_KINDS:
            raise ValueError(f"client cpu_dropout must be one of {', '.join(CPU_DROPOUT_KINDS)}, "
                             f"got {self.cpu_dropout!r}")


@dataclasses.dataclass
class LocalResult:
    """What local training did.

    Attributes:
        steps: Optimizer steps taken (skipped non-finite steps not counted).
        examples: Utterances in the client's data.
        seconds: Wall time of the training loop (data already in memory).
        loss: Mean loss over the steps.
        skipped: Steps skipped for a non-finite loss or gradient.
    """

    steps: int
    examples: int
    seconds: float
    loss: float
    skipped: int = 0

    @property
    def step_seconds(self) -> float:
        return self.seconds / max(self.steps, 1)


def load_utterances(data, utterances: Sequence[str],
                    data_dir: Path = Path("data")) -> List[Tuple[str, np.ndarray, str]]:
    """(utterance id, waveform float32, transcript) of each utterance of a KaldiDataDir.

    Audio is read as ESPnet's ``sound`` type reads it (soundfile, float32, mono); segments are
    cut from their recordings (:func:`espnet_ext.data.audio.utterance_audio`). `data_dir` names
    the data dir in error messages.

    Raises:
        DataDirError: A piped or unreadable recording, or multi-channel audio.
    """
    return [(utt, np.ascontiguousarray(audio, dtype=np.float32), data.text[utt])
            for utt, audio, _ in utterance_audio(data, utterances, Path(data_dir))]


def _optimizer(params, opts: LocalTraining) -> torch.optim.Optimizer:
    if opts.optim == "adam":
        return torch.optim.Adam(params, lr=opts.lr)
    return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum)


def train_locally(model: torch.nn.Module, examples: Sequence[Tuple[str, np.ndarray, str]],
                  preprocess_fn, collate_fn, opts: LocalTraining, seed: Sequence[int],
                  device: str = "cpu") -> LocalResult:
    """Train `model` in place on the examples with ESPnet's loss.

    Args:
        model: The (sub-)model, on `device`.
        examples: (utterance id, waveform, transcript) triples.
        preprocess_fn: ESPnet's training preprocessor (tokenizes the transcript).
        collate_fn: ESPnet's collate function (pads, adds ``*_lengths``).
        opts: Local training options.
        seed: Seed sequence, e.g. (run seed, round, client): shuffling, dropout, SpecAugment.
        device: Device of the model.

    Returns:
        Steps, examples, wall time and mean loss.
    """
    opts.validate()
    rng = np.random.default_rng(list(seed))
    torch.manual_seed(int(rng.integers(2**62)))
    items = [(uid, preprocess_fn(uid, {"speech": wav, "text": text})) for uid, wav, text in examples]
    model.train()
    on_cpu = torch.device(device).type == "cpu"
    dtype = autocast_dtype(opts.cpu_autocast) if on_cpu else None
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], opts)
    total_steps = opts.steps if opts.steps > 0 else opts.epochs * int(np.ceil(len(items) / opts.batch_size))
    t0 = time.perf_counter()
    levers = contextlib.ExitStack()
    levers.enter_context(cpu_fast_dropout(model, on_cpu and opts.cpu_dropout == "fast"))
    levers.enter_context(channels_last_convs(model, on_cpu and opts.cpu_channels_last))
    with levers:
        steps, skipped, losses = _train_steps(model, items, collate_fn, optimizer, opts, rng, dtype,
                                              device, total_steps)
    seconds = time.perf_counter() - t0
    return LocalResult(steps=steps, examples=len(items), seconds=seconds,
                       loss=float(np.mean(losses)) if losses else float("nan"), skipped=skipped)


def _train_steps(model, items, collate_fn, optimizer, opts: LocalTraining, rng, dtype, device,
                 total_steps: int) -> Tuple[int, int, List[float]]:
    """The local training loop: (steps taken, steps skipped, losses of the steps taken)."""
    steps = skipped = 0
    losses: List[float] = []
    while steps + skipped < total_steps:
        order = rng.permutation(len(items))
        for start in range(0, len(order), opts.batch_size):
            if steps + skipped >= total_steps:
                break
            _, batch = collate_fn([items[i] for i in order[start:start + opts.batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            with cpu_autocast(model, dtype):
                loss, _, _ = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), opts.grad_clip if opts.grad_clip > 0 else float("inf"))
            if not (torch.isfinite(loss) and torch.isfinite(norm)):
                skipped += 1  # as ESPnet's trainer: skip the update, keep going
                continue
            optimizer.step()
            steps += 1
            losses.append(float(loss.detach()))
    return steps, skipped, losses


# --- the client's process-wide state ---------------------------------------------------------


class ClientRuntime:
    """What every client update in one process shares: a template model, the data pipeline and
    the adaptation data. Built once per process (per Ray worker) and cached.

    Args:
        setup: The run's :class:`espnet_ext.federated.options.FederatedSetup`.
    """

    _cache: Dict[str, "ClientRuntime"] = {}
    #: Working models kept per process, one per sub-model structure (a run's plan gives every
    #: client the same structure: its clients reuse one model instead of copying the template).
    MAX_WORKING_MODELS = 2

    def __init__(self, setup):
        from espnet_ext.data.kaldi import KaldiDataDir
        from espnet_ext.federated.modelio import build_asr_model, build_data_pipeline
        from espnet_ext.federated.partition import speaker_clients
        from espnet_ext.federated.units import find_droppable_modules

        if setup.backend != "local":  # a worker process of its own; in-process runs keep the caller's
            torch.set_num_threads(max(1, setup.client_threads))
        self.setup = setup
        self.device = setup.device
        self.template = build_asr_model(setup.config_path, device="cpu")
        self.modules = find_droppable_modules(self.template)
        self.preprocess_fn, self.collate_fn = build_data_pipeline(setup.config_path)
        self.data = KaldiDataDir.read(setup.adapt_data)
        self.clients = speaker_clients(self.data, setup.min_utts)
        self._working: Dict[str, torch.nn.Module] = {}

    def working_model(self, structure: Mapping[str, Mapping[str, int]]) -> torch.nn.Module:
        """A model of the received sub-model `structure`, on the runtime's device, all
        parameters trainable, no gradients: the template resized to it once (a deep copy),
        then reused by every update with that structure. Reuse is safe because an update loads
        every entry that training changes (parameters and batch-norm statistics are all sent);
        the entries it does not load are fixed buffers equal in every copy."""
        from espnet_ext.federated.submodel import shrink_model_to_structure_

        key = json.dumps(structure, sort_keys=True)
        model = self._working.pop(key, None)
        if model is None:
            model = shrink_model_to_structure_(copy.deepcopy(self.template), self.modules, structure)
            model.to(self.device)
        self._working[key] = model  # most recently used last
        while len(self._working) > self.MAX_WORKING_MODELS:
            self._working.pop(next(iter(self._working)))
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        return model

    @classmethod
    def get(cls, setup) -> "ClientRuntime":
        key = setup.identity_key()
        if key not in cls._cache:
            cls._cache[key] = cls(setup)
        return cls._cache[key]


def local_training_seed(run_seed: int, server_round: int, client: int) -> Tuple[int, int, int, int]:
    """The seed sequence of a client's local training in a round (shuffling, dropout, SpecAugment)."""
    return (run_seed, server_round, client, 7)


def injected_failure(seed: int, server_round: int, client: int, probability: float) -> bool:
    """Whether client `client` fails in round `server_round` (seeded; same in a resumed run)."""
    if probability <= 0:
        return False
    return bool(np.random.default_rng([seed, server_round, client, 0xFA11]).random() < probability)


def run_client_update(setup, partition_id: int, state: Dict[str, torch.Tensor], structure: dict,
                      server_round: int, frozen_keys: Sequence[str] = ()
                      ) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """One client update: build the sub-model, train it on the partition's data, measure.

    Args:
        setup: The run's setup.
        partition_id: This node's client index (its speaker).
        state: Received tensors (the sub-model's sent entries).
        structure: Received sub-model structure {module: {"kept", "norm_groups"}}.
        server_round: Round number (seeds the local randomness).
        frozen_keys: Entries of the frozen layer groups: loaded, not trained, not returned.

    Returns:
        (trained tensors: the keys of `state` not in `frozen_keys`; metrics: ``num-examples``,
        ``steps``, ``train-seconds``, ``step-seconds``, ``loss``, ``params-trained``, ``peak-rss-bytes``,
        ``peak-device-bytes``, ``model-state-bytes``, ``load-seconds``).

    Raises:
        ValueError: Received tensors that do not fit the model.
    """
    from espnet_ext.federated.submodel import detach_cached_tensors_

    rt = ClientRuntime.get(setup)
    client = rt.clients[partition_id]
    frozen = set(frozen_keys)
    t0 = time.perf_counter()
    examples = load_utterances(rt.data, client.utterances, setup.adapt_data)
    load_seconds = time.perf_counter() - t0
    with PeakMemory(rt.device) as mem:
        model = rt.working_model(structure)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"received tensors the model does not have, e.g. {unexpected[0]!r}")
        params = dict(model.named_parameters())
        untrained = [k for k in missing if k in params]
        if untrained:
            raise ValueError(f"received no value for parameter {untrained[0]!r}")
        for name, p in params.items():
            if name in frozen:
                p.requires_grad_(False)
        result = train_locally(model, examples, rt.preprocess_fn, rt.collate_fn, setup.local,
                               seed=local_training_seed(setup.seed, server_round, partition_id),
                               device=rt.device)
        new_state = model.state_dict()
        # Copies: the kept model trains the next update, the reply must not change with it.
        trained = {k: new_state[k].detach().to("cpu", copy=True).contiguous() for k in state if k not in frozen}
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    copies = optimizer_state_factor("sgd_momentum" if setup.local.optim == "sgd"
                                    and setup.local.momentum > 0 else setup.local.optim)
    metrics = {
        "num-examples": result.examples,
        "steps": result.steps,
        "skipped-steps": result.skipped,
        "train-seconds": result.seconds,
        "step-seconds": result.step_seconds,
        "load-seconds": load_seconds,
        "loss": result.loss,
        "params-trained": n_params,
        "peak-rss-bytes": mem.peak_rss_bytes,
        "peak-device-bytes": mem.peak_device_bytes,
        "model-state-bytes": training_state_bytes(model, copies),
    }
    for p in model.parameters():  # the kept model holds no gradients or graph between updates
        p.grad = None
    detach_cached_tensors_(model)
    return trained, metrics


def make_client_app(setup):
    """The Flower ``ClientApp`` of a run: ``train`` runs one client update, ``query`` tells the
    server which client (partition) this node is."""
    from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def query(msg: Message, context) -> Message:
        pid = int(context.node_config["partition-id"])
        return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context) -> Message:
        pid = int(context.node_config["partition-id"])
        config = msg.content["config"]
        server_round = int(config["server-round"])
        if int(config["client-index"]) != pid:
            raise ValueError(f"message for client {config['client-index']} reached node of client {pid}")
        if injected_failure(setup.seed, server_round, pid, setup.failure_prob):
            # An Error reply is what the server sees when a client crashes or drops out.
            return Message(Error(code=2, reason=f"{INJECTED_FAILURE} (round {server_round}, client {pid})"),
                           reply_to=msg)
        state = msg.content["arrays"].to_torch_state_dict()
        frozen = json.loads(config["frozen-keys"]) if "frozen-keys" in config else []
        trained, metrics = run_client_update(setup, pid, state, json.loads(config["structure"]),
                                             server_round, frozen)
        record = RecordDict({"arrays": ArrayRecord(torch_state_dict=trained),
                             "metrics": MetricRecord({k: float(v) if isinstance(v, float) else int(v)
                                                      for k, v in metrics.items()})})
        return Message(record, reply_to=msg)

    return app

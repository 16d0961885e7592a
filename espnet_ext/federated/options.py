"""Options of a federated simulation, checked up front, and what a resumed run must match."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from espnet_ext.federated.client import LocalTraining
from espnet_ext.federated.plan import DropoutPlan

BACKENDS = ("ray", "local", "flwr")


class OptionsError(ValueError):
    """A federated-simulation option is invalid."""


@dataclasses.dataclass(frozen=True)
class FederatedSetup:
    """Everything a federated run needs; picklable, so Ray workers get it with the ClientApp.

    Attributes:
        out_dir: Run directory (checkpoints, costs, history, results, Ray's temp dir).
        config_path: The run's copy of the training config (absolute paths inside).
        model_file: Pre-trained weights the run starts from.
        adapt_data: Kaldi data dir of the federated (adaptation) domain; its speakers are
            the clients.
        eval_data: (name, Kaldi data dir) pairs scored on the server.
        plan: Federated-dropout plan.
        rounds: Number of rounds.
        clients_per_round: Clients sampled per round.
        min_utts: Speakers with fewer utterances are not clients.
        local: Client training options.
        server_lr: Server learning rate (1 = FedAvg).
        seed: Seeds sampling, sub-models, local training, injected failures.
        failure_prob: Probability that a client fails in a round (injected, seeded).
        backend: ``ray`` (Flower's simulation runtime, clients in Ray workers), ``local``
            (the same ServerApp and ClientApp, clients run one after another in this process)
            or ``flwr`` (the same apps started by ``flwr run`` from a setup file,
            :mod:`espnet_ext.federated.setup_file`; clients in processes of their own).
        num_workers: Ray workers (client processes running at once).
        client_threads: Torch threads per client process.
        client_gpus: GPU fraction per Ray worker (0 on CPU).
        device: ``cpu`` or ``cuda`` for client training and server evaluation.
        eval_every: Evaluate the global model every N rounds (the last round always).
        eval_batch_size: Utterances per evaluation batch.
        round_timeout: Seconds to wait for a round's replies.
        keep_checkpoints: Round checkpoints kept (older ones deleted; the last is kept).
        progress: Show a progress bar over rounds.
    """

    out_dir: Path
    config_path: Path
    model_file: Path
    adapt_data: Path
    eval_data: Tuple[Tuple[str, Path], ...]
    plan: DropoutPlan
    rounds: int = 10
    clients_per_round: int = 4
    min_utts: int = 1
    local: LocalTraining = LocalTraining()
    server_lr: float = 1.0
    seed: int = 0
    failure_prob: float = 0.0
    backend: str = "ray"
    num_workers: int = 2
    client_threads: int = 1
    client_gpus: float = 0.0
    device: str = "cpu"
    eval_every: int = 0
    eval_batch_size: int = 16
    round_timeout: float = 3600.0
    keep_checkpoints: int = 2
    progress: bool = True

    def validate(self) -> None:
        """Raise OptionsError naming the first invalid option."""
        checks = [
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (self.clients_per_round >= 1, f"clients per round must be >= 1, got {self.clients_per_round}"),
            (self.min_utts >= 1, f"min utterances per client must be >= 1, got {self.min_utts}"),
            (self.server_lr > 0, f"server learning rate must be > 0, got {self.server_lr}"),
            (0.0 <= self.failure_prob < 1.0,
             f"client failure probability must be in [0, 1), got {self.failure_prob}"),
            (self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"),
            (self.num_workers >= 1, f"num_workers must be >= 1, got {self.num_workers}"),
            (self.client_threads >= 1, f"client threads must be >= 1, got {self.client_threads}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionsError(message)
        try:
            self.local.validate()
        except ValueError as e:
            raise OptionsError(str(e)) from None
        names = [n for n, _ in self.eval_data]
        if len(set(names)) != len(names):
            raise OptionsError(f"evaluation set names must be unique, got {names}")

    def identity(self) -> Dict[str, object]:
        """Options that change results: a resumed run must have the same ones.

        Rounds may grow (a finished run can be extended); backend, workers, threads, timeouts
        and the progress bar do not change results.
        """
        return {
            "model_file": str(self.model_file),
            "adapt_data": str(self.adapt_data),
            "plan": self.plan.to_dict(),
            "clients_per_round": self.clients_per_round,
            "min_utts": self.min_utts,
            "local": self.local.identity(),
            "server_lr": self.server_lr,
            "seed": self.seed,
            "failure_prob": self.failure_prob,
            "device": self.device,
        }

    def identity_key(self) -> str:
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> Dict[str, object]:
        d = self.identity()
        d.update(out_dir=str(self.out_dir), config_path=str(self.config_path), rounds=self.rounds,
                 eval_data=[[n, str(p)] for n, p in self.eval_data], backend=self.backend,
                 num_workers=self.num_workers, eval_every=self.eval_every)
        return d


def check_same_run(stored: Optional[Dict[str, object]], setup: FederatedSetup, path: Path) -> None:
    """Refuse to resume a run directory that holds a run with other options.

    Raises:
        OptionsError: Names the first option that differs and the fix.
    """
    if stored is None:
        return
    new = setup.identity()
    for key, value in new.items():
        old = stored.get(key)
        if json.dumps(old, sort_keys=True) != json.dumps(value, sort_keys=True):
            raise OptionsError(
                f"{path}: the run in {setup.out_dir} has {key} = {json.dumps(old)}, this call "
                f"{json.dumps(value)}; resume with the same options or use another --out_dir"
            )


def parse_eval_data(specs: List[str]) -> Tuple[Tuple[str, Path], ...]:
    """``name=path`` or ``path`` (name = folder name) -> ((name, path), ...)."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        out.append((name, Path(path)))
    return tuple(out)

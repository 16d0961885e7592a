"""Federated adaptation of ESPnet ASR models with structured federated dropout, on Flower.

Modules, in the order data flows through them:

* :mod:`~espnet_ext.federated.partition`: clients are speakers; seeded per-round sampling;
  withheld-domain splits (central pre-training on A, federated adaptation on B).
* :mod:`~espnet_ext.federated.units`: which units of a model can be dropped (feed-forward
  hidden units, attention heads, Conformer conv channels) and which tensor slices each owns.
* :mod:`~espnet_ext.federated.submodel`: draw a client's sub-model, cut it out, resize a model
  to it, merge trained sub-models back (per-element averaging over the clients that trained it).
* :mod:`~espnet_ext.federated.plan`: per-layer-group dropout rates: none, uniform, targeted by a
  layer-reset scan, and uniform matched to another plan's client cost.
* :mod:`~espnet_ext.federated.cost`: per-client cost (parameters, bytes, step time, memory).
* :mod:`~espnet_ext.federated.client`, :mod:`~espnet_ext.federated.strategy`,
  :mod:`~espnet_ext.federated.server`: the Flower ClientApp, the FedAvg strategy subclass and
  the ServerApp body (checkpoints, resume, evaluation).
* :mod:`~espnet_ext.federated.simulation`: run directories and backends (Flower's Ray
  simulation runtime, or in-process); :mod:`~espnet_ext.federated.sweep`: no dropout once and
  uniform/targeted per rate, resumable (the recipe's stage 8); :mod:`~espnet_ext.federated.results`:
  result tables.

Command line: ``python -m espnet_ext.bin.fl_simulate {split,run,sweep,compare}``.
"""

# Flower and Ray are optional (the ``federated`` extra): every module here but the strategy
# imports without them, and only the simulation itself needs them.
FEDERATED_EXTRA_HINT = (
    "install the federated extra: pip install 'espnet_ext[federated]' (from a checkout: "
    "pip install -e '.[federated]'; tools/install.sh does it)"
)


class FederatedExtraMissing(ImportError):
    """Flower (``flwr``) or Ray is not importable; the message says how to install them."""


def require_flower(ray: bool = True) -> None:
    """Check that a federated simulation can run here, before anything is prepared or written.

    Args:
        ray: Also require Ray (Flower's simulation runtime, backend ``ray``).

    Raises:
        FederatedExtraMissing: Naming the package that failed to import and how to install it.
    """
    import importlib

    for module, what in [("flwr", "Flower (flwr)")] + ([("ray", "Ray")] if ray else []):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise FederatedExtraMissing(
                f"federated simulations need {what}, which does not import here ({e}); "
                f"{FEDERATED_EXTRA_HINT}"
            ) from e

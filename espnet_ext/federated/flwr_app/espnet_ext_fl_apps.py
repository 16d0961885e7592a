"""The Flower ServerApp and ClientApp of a prepared federated run, for ``flwr run``.

Both read the run's setup from the file named by the run config (``setup``, see
:mod:`espnet_ext.federated.setup_file`) and run what the ``ray`` and ``local`` backends run:
the server body :func:`espnet_ext.federated.server.run_server` and the client of
:func:`espnet_ext.federated.client.make_client_app`. Flower packs this directory and imports
this module from it; everything else is imported from the installed espnet_ext.
"""

from __future__ import annotations

from typing import Dict

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server_app = ServerApp()
client_app = ClientApp()
_client_apps: Dict[str, ClientApp] = {}


@server_app.main()
def run(grid: Grid, context: Context) -> None:
    from espnet_ext.federated.server import run_server
    from espnet_ext.federated.setup_file import setup_from_run_config
    from espnet_ext.federated.simulation import begin_run

    setup = setup_from_run_config(context.run_config)
    begin_run(setup)
    run_server(grid, setup)


def _client_of(context: Context) -> ClientApp:
    """The ClientApp of the run named in the context's run config (one per process and run)."""
    from espnet_ext.federated.client import make_client_app
    from espnet_ext.federated.setup_file import RUN_CONFIG_KEY, setup_from_run_config

    key = str(context.run_config.get(RUN_CONFIG_KEY, ""))
    if key not in _client_apps:
        _client_apps[key] = make_client_app(setup_from_run_config(context.run_config))
    return _client_apps[key]


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    return _client_of(context)(msg, context)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    return _client_of(context)(msg, context)

"""Flower app directory for ``flwr run``: ``pyproject.toml`` and :mod:`.espnet_ext_fl_apps`."""

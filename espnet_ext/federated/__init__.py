"""Federated learning with structured federated dropout (sub-models per client) on Flower."""

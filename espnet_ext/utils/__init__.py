"""Plumbing shared by every subpackage."""

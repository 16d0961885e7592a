"""Plumbing shared by every subpackage.

Modules: `atomic` (text, JSON and torch files written through a temp file and a rename, with
umask-derived modes), `jsonable` (values as plain JSON types).
"""

"""Reports people read: figures, tables and a recipe's RESULTS.md assembled from result files.

Modules: `plots` (figures of scans and federated runs), `plots_analysis` (figures of the
cross-run analysis), `recipe_results` (RESULTS.md of a recipe run).
"""

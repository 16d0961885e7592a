"""Reports people read: figures, tables and a recipe's RESULTS.md assembled from result files.

Modules: `figures` (the matplotlib backend, figure saving, heatmaps of one or several panels),
`analysis_figures` (scatter and trajectory figures of the cross-run analysis),
`federated_figures` (error rate against client model size), `tables` (markdown and TSV tables,
fixed-decimal numbers), `recipe_results` (RESULTS.md of a recipe run).
"""

"""The run level: one Hydra job from its config to its output directory: the selection of mistakes,
the run directory (identity, persisted selection, result rows), the summary, clean stops, caches."""

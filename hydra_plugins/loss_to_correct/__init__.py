"""Hydra plugins of loss-to-correct (Hydra finds plugins in the hydra_plugins namespace only)."""

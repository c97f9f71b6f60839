"""Statistics: rank estimates with bootstrap confidence intervals, and the research question's
statistics of one run."""

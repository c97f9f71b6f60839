"""Merge runs of a sweep into tidy tables, statistics and plots."""

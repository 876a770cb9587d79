"""Incentives (issue 15): contribution values anyone can recompute
(:mod:`fedledger.incentives.shapley`)."""

"""The domain: models, the error tree, names, outcomes, quantities and class parameters.

Imports nothing of ours: every other layer builds on it."""

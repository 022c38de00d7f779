"""Composer training on midmix data: recipes, Pythia-family models and in-loop callbacks.

Run a recipe with `composer [-n N] -m midmix.train RECIPE.yaml [key=value ...]` (any number of
processes) or `midmix train RECIPE.yaml` (one). Needs `pip install 'midmix[train]'`.
"""

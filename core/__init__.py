"""Managers behind the notebooks: setup, models, datasets, training and utilities.

Nothing here imports ipywidgets; the panels in ``widgets/`` call into this package, and this
package starts ``trainer/`` as a subprocess. Heavy libraries (torch, diffusers) are imported
inside the functions that need them, so opening a notebook stays fast.
"""

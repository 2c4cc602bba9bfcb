"""ipywidgets panels for the two notebooks. View only: every decision is made in ``core``."""

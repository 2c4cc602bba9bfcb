"""Training back end: model loading, LoRA networks and checkpoint formats, free of any UI code."""

"""Resumable, verified downloads of base models (Hugging Face, Civitai, direct URLs)."""

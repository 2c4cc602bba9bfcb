"""Data stages: which folders train (blueprint), images, captions, buckets and caches."""

"""The WD14 tagger, one job per module: labels, postprocess, preprocess, model, pipeline."""

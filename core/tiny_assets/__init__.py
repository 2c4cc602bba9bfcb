"""Tiny, random-weight models and data, built offline in seconds.

The tests run on them, and so does "check my setup" (``core.self_check``), which proves on a
fresh server that the whole chain (load, tag, train, save) works before a multi-GB base model is
downloaded. Modules: ``sd_models`` (SD1.5/SDXL pipelines), ``tokenizer`` (their CLIP tokenizer),
``tagger`` (a WD14-style ONNX tagger), ``images`` (an odd-case image set), ``samples`` (a few
clean images the tiny tagger recognises).

Nothing is imported here on purpose: ``sd_models`` pulls in torch and diffusers, which the
notebook must not pay for until a builder is actually used.
"""

"""Custom components: the WD14 ONNX tagger (``tag_images_by_wd14_tagger``, ``wd14/``) and the
natural-language captioners (``captioners/``: BLIP, behind a small protocol). Headless: never imports
``core`` or ``widgets``.
"""

"""Custom components: the WD14 ONNX tagger (``tag_images_by_wd14_tagger``)."""

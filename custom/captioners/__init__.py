"""Natural-language captioners behind one protocol, and the caption-file helpers the tagger shares.

Adding a captioner (Florence-2, JoyCaption): one class with ``name`` and ``caption(images)``
(see :class:`Captioner`), plus one builder line in ``custom/captioners/__main__.py`` for the command line.
"""
from __future__ import annotations

from custom.captioners.base import CaptionReport, CaptionRunOptions, Captioner, caption_folder
from custom.captioners.files import ExistingPolicy

__all__ = ["CaptionReport", "CaptionRunOptions", "Captioner", "ExistingPolicy", "caption_folder"]

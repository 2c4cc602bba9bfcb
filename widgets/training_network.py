"""The training panel's basic-mode Network type: a plain-words dropdown, and conv fields shown only
for the types that train the conv layers.

View only: ``core.training.network_types`` maps a type to ``network_module`` + ``network_args``
and back. :class:`NetworkTypeSync` (a mixin of the panel) keeps the two in step:

- the user picks a type, changes its conv fields, or the network size / alpha: the
  ``network_module`` and ``network_args`` fields are written from the type (never when it is Custom);
- the user edits ``network_module`` / ``network_args`` by hand (advanced mode): the type shows what
  they spell, "Custom (see advanced)" when no type writes exactly that, and nothing is rewritten;
- after a batch of changes (load, import, preset, reset, a Fix): a batch that changed those two
  fields decides the type; otherwise the type (a preset's, or the one shown) is written again with
  the new sizes.
"""
from __future__ import annotations

from collections.abc import Callable

import ipywidgets as w

from core.training.network_types import (
    CONV_ALPHA, CONV_DIM, CUSTOM, NETWORK_TYPE, NETWORK_TYPES, NetworkChoice, detect_network_type, network_values,
)
from trainer.options import BY_NAME
from widgets.training_fields import OptionField

NETWORK_FIELDS = ("network_module", "network_args")  # what a type writes
SIZE_FIELDS = ("network_dim", "network_alpha")  # what a type's files depend on


class NetworkTypeFields:
    """The Network type dropdown (``type``), ``conv_dim`` and ``conv_alpha`` (OptionFields) and a note."""

    def __init__(self, has_cuda: bool, on_change: Callable[[], None]) -> None:
        self.type = OptionField(NETWORK_TYPE, has_cuda, on_change)
        self.conv_dim = OptionField(CONV_DIM, has_cuda, on_change)
        self.conv_alpha = OptionField(CONV_ALPHA, has_cuda, on_change)
        self.note = w.HTML()
        self.box = w.VBox([self.type.box, self.conv_dim.box, self.conv_alpha.box, self.note])
        self.update()

    @property
    def key(self) -> str:
        """The chosen type's key (``custom`` for Custom)."""
        return self.type.widget.value

    def choice(self) -> NetworkChoice | None:
        """The chosen type with its conv settings; None for Custom."""
        if self.key == CUSTOM:
            return None
        if not NETWORK_TYPES[self.key].uses_conv:
            return NetworkChoice(self.key)
        return NetworkChoice(self.key, self.conv_dim.value(), self.conv_alpha.value())

    def show(self, choice: NetworkChoice | None) -> None:
        """Show ``choice`` (None: Custom)."""
        self.type.set_value(choice.key if choice else CUSTOM)
        self.conv_dim.set_value(choice.conv_dim if choice else None)
        self.conv_alpha.set_value(choice.conv_alpha if choice else None)
        self.update()

    def update(self) -> None:
        """Conv fields only for types that train the conv layers; a note for Custom."""
        conv = self.key != CUSTOM and NETWORK_TYPES[self.key].uses_conv
        for field in (self.conv_dim, self.conv_alpha):
            field.box.layout.display = "" if conv else "none"
        self.note.value = ('<div class="lora-muted">Your own network_module and network_args (advanced mode, '
                           "Network group) are used as they are; pick a type to replace them.</div>"
                           if self.key == CUSTOM else "")


class NetworkTypeSync:
    """Keeps the Network type and the ``network_module`` / ``network_args`` fields in step (module doc).

    Expects the panel's ``network`` (NetworkTypeFields), ``_field``, ``_value``, ``_quiet``,
    ``_touched``, ``_changed`` and ``messages``."""

    _network_syncing = False  # True while this mixin sets widgets (their observers stay quiet)
    _network_batch_edited = False  # network_module / network_args changed in the current batch
    _network_preset: str | None = None  # a type a preset picked in the current batch
    _network_shown = NETWORK_TYPE.default

    def _sizes(self) -> tuple[int, float]:
        dim, alpha = self._value("network_dim"), self._value("network_alpha")
        dim = BY_NAME["network_dim"].default if dim is None else dim
        return int(dim), float(BY_NAME["network_alpha"].default if alpha is None else alpha)

    def _show_network(self, choice: NetworkChoice | None) -> None:
        self._network_syncing = True
        try:
            self.network.show(choice)
        finally:
            self._network_syncing = False
        self._network_shown = self.network.key

    def _write_network(self) -> None:
        """Write network_module / network_args from the type shown (nothing for Custom)."""
        choice = self.network.choice()
        self._network_shown = self.network.key
        if choice is None:
            return
        module, args = network_values(choice, *self._sizes())
        self._network_syncing = True
        try:
            self._field("network_module").set_value(module)
            self._field("network_args").set_value(args)
        finally:
            self._network_syncing = False

    def _derive_network(self) -> None:
        """Show the type network_module / network_args spell (Custom when none writes exactly them)."""
        module, args = self._value("network_module"), self._value("network_args") or []
        self._show_network(detect_network_type(module, args, *self._sizes()))

    def _network_edited(self) -> None:
        """The type or a conv field changed."""
        self.network.update()
        if self._network_syncing or self._quiet:
            return  # set by this mixin, or inside a batch (its end decides)
        self._touched = True
        before = self._network_shown
        old = (self._value("network_module"), self._value("network_args") or [])
        self._write_network()
        if before == CUSTOM and self.network.key != CUSTOM:  # explicit, but say what was replaced
            self.messages.clear()
            self.messages.info(f"Network type {NETWORK_TYPES[self.network.key].label}: your own network settings "
                               f"(network_module = {old[0]}, network_args = {old[1]}) were replaced.")
        self._changed()

    def _network_option_edited(self, name: str) -> None:
        """A network option field changed (called by the panel before its own refresh)."""
        if self._quiet:
            self._network_batch_edited |= name in NETWORK_FIELDS
        elif name in NETWORK_FIELDS:
            self._derive_network()  # the user's hand edit: shown, never rewritten
        else:
            self._write_network()  # a new size: the type's conv settings follow it

    def _network_after_batch(self) -> None:
        """At the end of a batch (still inside it): see the module doc."""
        preset, edited = self._network_preset, self._network_batch_edited
        self._network_preset, self._network_batch_edited = None, False
        if preset is not None:
            self._show_network(NetworkChoice(preset))
            self._write_network()
        elif edited:
            self._derive_network()
        else:
            self._write_network()

    def _preset_network(self, key: str | None) -> str:
        """Let a preset pick its network type, unless the form is on Custom; returns a note for the user."""
        if not key:
            return ""
        if self.network.key == CUSTOM:
            return " Your own network settings (Custom) are kept."
        self._network_preset = key
        return ""

    def _reset_network(self) -> None:
        """Back to the default type (inside a reset batch; the fields are reset by the caller)."""
        self._show_network(NetworkChoice(NETWORK_TYPE.default))
        self._network_batch_edited = True


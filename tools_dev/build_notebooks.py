"""Write the two widget notebooks from the cell texts below: ``python tools_dev/build_notebooks.py``.

The notebooks are committed as written here, without outputs or execution counts, so a diff shows only
real changes; ``tests/test_notebooks.py`` fails when a committed notebook differs from what this script
writes. Edit the texts here, then rerun the script. Cell ids are fixed for the same reason.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat import v4

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

CONTEXT_CELL = """from widgets.context import NotebookContext

context = NotebookContext()  # what the panels below share: your folders, dataset, project and model"""

DATASET_CELLS: list[tuple[str, str, str]] = [
    ("intro", "markdown", """# Dataset Maker

This notebook turns a folder of pictures into a training dataset: images with a caption file
beside each one. Run the cells from top to bottom (**Shift+Enter**, or *Run > Run All Cells*);
each code cell shows one panel, and every panel explains what its buttons do.

What you will do here:

1. check the machine (GPU, memory, disk);
2. bring your images in and let every image be checked;
3. tag the images automatically;
4. polish the captions: trigger word, unwanted tags, a look at single images.

Nothing here deletes or overwrites your pictures: rejected images are moved aside, and every
caption change can be undone. When you are done, open `Lora_Trainer_Widget.ipynb`."""),
    ("context", "code", CONTEXT_CELL),
    ("setup-md", "markdown", """## 1. Check the machine

The report below says what this computer can do: which GPU and how much video memory (VRAM)
it has, free RAM and disk, and where your files are kept. Yellow or red lines tell you what
to change before you spend time on a dataset (for example: not enough free disk space)."""),
    ("setup", "code", """from widgets.setup_panel import SetupPanel

SetupPanel(context)"""),
    ("dataset-md", "markdown", """## 2. Bring your images in

Pick a project name and how your pictures arrive: uploaded from your computer (best for small
sets), a folder already on this server, a zip file, or a web link. Images land in
`datasets/<project>/<repeats>_<concept>`: the number in front is how often each image is
shown per epoch.

Every image is then opened and checked. The grid marks images that are broken, duplicated, too
small or without a caption, and the fix buttons deal with them for you. The charts show your
image sizes and, after tagging, the most common tags: a dataset of 15-50 varied, sharp images
of one subject is a good start."""),
    ("dataset", "code", """from widgets.dataset_panel import DatasetPanel

dataset = DatasetPanel(context)  # the panels below refresh its grid after they change captions
dataset"""),
    ("tagging-md", "markdown", """## 3. Tag the images

A WD14 tagger looks at each image and writes the tags it sees into the caption file beside it
(`image.png` -> `image.txt`). The threshold decides how sure the tagger must be: lower gives
more tags (and more wrong ones), higher gives fewer. Tags you never want can be listed to be
left out. BLIP writes a short sentence instead of tags, for models that prefer prose.

The first run downloads the tagger model once; later runs reuse it."""),
    ("tagging", "code", """from widgets.tagging_panel import TaggingPanel

TaggingPanel(context, on_captions_changed=dataset.refresh)"""),
    ("captions-md", "markdown", """## 4. Polish the captions

Captions teach the LoRA what is *not* your subject. A common recipe for a character:

- add a unique **trigger word** in front of every caption (e.g. `ohwx`), the word you will
  type later to call your character;
- **remove** tags that describe the character itself (hair colour, eye colour): the LoRA should
  learn them as part of the trigger word, not as separate tags.

Every change shows a before/after preview first, and **Undo** restores the captions as they
were. The single-image editor shows one picture beside its caption for hand fixes."""),
    ("captions", "code", """from widgets.caption_panel import CaptionPanel

CaptionPanel(context, on_captions_changed=dataset.refresh)"""),
    ("next", "markdown", """## Next

Your dataset is ready when the validation report is green and the captions read well. Open
`Lora_Trainer_Widget.ipynb` and choose this dataset's folder in its training panel."""),
]

TRAINER_CELLS: list[tuple[str, str, str]] = [
    ("intro", "markdown", """# LoRA Trainer

This notebook trains a LoRA from the dataset you prepared in `Dataset_Maker_Widget.ipynb`.
Run the cells from top to bottom (**Shift+Enter**, or *Run > Run All Cells*).

What you will do here:

1. check the machine and download a base model;
2. choose the settings (a preset for your base model fills in sane values);
3. start training and watch it;
4. finish the LoRA: resize, merge, inspect, upload, and try it at several strengths.

Training runs in the background: you can close the browser tab, and the monitor picks the run
up again when you come back."""),
    ("context", "code", CONTEXT_CELL),
    ("setup-md", "markdown", """## 1. Check the machine, get a base model

The report shows your GPU and its memory (VRAM): SDXL-family models (Pony, Illustrious, NoobAI)
want about 12 GB or more, SD1.5 trains on 6-8 GB. **Check my setup** trains a tiny LoRA on
made-up data in about a minute, so you know everything works before downloading gigabytes.

Then download a base model: pick a preset, or paste a Hugging Face or Civitai link. Some
downloads need a token: it is never shown, and it is kept (in a private file outside the
project folders) only when you tick *Remember*."""),
    ("setup", "code", """from widgets.setup_panel import SetupPanel

SetupPanel(context, downloads=True)"""),
    ("training-md", "markdown", """## 2. Choose the settings

Give the project a name, pick the base model and the dataset folder, then a **preset** that
matches your base model. The basic settings are the ones that matter most: network size
(dim), learning rate, epochs, repeats, batch size and resolution.

The checks under the form update as you type: the total number of steps (with the sum that
gives it), settings that contradict each other or waste GPU time, each with the reason and a
**Fix** button. **Advanced** shows every option, grouped, each with a **?** that explains what
it does and which values are usual. Preview the exact config files before you start; configs
are saved under `training_configs/<project>/` and can be loaded again later.

**Start** writes the config and hands it to the monitor below."""),
    ("training", "code", """from widgets.monitor_panel import MonitorPanel
from widgets.training_panel import TrainingPanel

monitor = MonitorPanel(context)  # shown in the next cell; the Start button below hands it the config
TrainingPanel(context, on_start=monitor.start)"""),
    ("monitor-md", "markdown", """## 3. Watch the training

The progress bar shows the step, the epoch, the speed and the time left; the chart shows the
loss (it goes up and down; the trend matters). Sample images appear as they are made, and each
saved LoRA file is listed. **Stop** ends the run cleanly: the LoRA so far and the training state
are saved, so it can be resumed. After a kernel restart, run the cells again (*Run All*): the
monitor finds a run that is still going and shows it again."""),
    ("monitor", "code", "monitor"),
    ("utilities-md", "markdown", """## 4. Finish the LoRA

Resize a LoRA to a smaller rank, merge it into a base model, extract a LoRA from two models,
read a LoRA's training settings, upload it to Hugging Face, and **try it**: a few pictures at
several strengths side by side show whether it learned your subject and which strength to use."""),
    ("utilities", "code", """from widgets.utilities_panel import UtilitiesPanel

UtilitiesPanel(context)"""),
]

NOTEBOOKS = {"Dataset_Maker_Widget.ipynb": DATASET_CELLS, "Lora_Trainer_Widget.ipynb": TRAINER_CELLS}
# Which panel each panel cell shows: notebook -> cell id -> (module, class). The tests check each cell's output.
PANELS = {
    "Dataset_Maker_Widget.ipynb": {
        "setup": ("widgets.setup_panel", "SetupPanel"),
        "dataset": ("widgets.dataset_panel", "DatasetPanel"),
        "tagging": ("widgets.tagging_panel", "TaggingPanel"),
        "captions": ("widgets.caption_panel", "CaptionPanel"),
    },
    "Lora_Trainer_Widget.ipynb": {
        "setup": ("widgets.setup_panel", "SetupPanel"),
        "training": ("widgets.training_panel", "TrainingPanel"),
        "monitor": ("widgets.monitor_panel", "MonitorPanel"),
        "utilities": ("widgets.utilities_panel", "UtilitiesPanel"),
    },
}


def panel_titles(name: str) -> list[str]:
    """The <h3> titles of the panels notebook ``name`` shows, top to bottom (imports the panel modules)."""
    import importlib

    return [getattr(importlib.import_module(module), cls).title for module, cls in PANELS[name].values()]


def build(cells: list[tuple[str, str, str]]) -> nbformat.NotebookNode:
    """A notebook with these (id, kind, source) cells, no outputs, and the python3 kernelspec."""
    notebook = v4.new_notebook()
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for cell_id, kind, source in cells:
        cell = v4.new_markdown_cell(source) if kind == "markdown" else v4.new_code_cell(source)
        cell.id = cell_id
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(cells: list[tuple[str, str, str]]) -> str:
    """The notebook file's exact text."""
    return nbformat.writes(build(cells)) + "\n"


def main() -> int:
    """Write both notebooks into the project folder."""
    for name, cells in NOTEBOOKS.items():
        (PROJECT_ROOT / name).write_text(render(cells), encoding="utf-8")
        print(f"wrote {name} ({len(cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

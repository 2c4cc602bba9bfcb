"""The installer's parts; ``installer.py`` next to this folder is the command line that uses them.

Standard library only, and importable by Python 3.7 and newer: the installer runs before anything
is installed, and an unsupported Python must still get the "use Python 3.10 to 3.12" message.

- ``model``: paths, pins and the dataclasses passed between the parts;
- ``plan``: the pure planner that turns machine facts and options into commands;
- ``probe``: gathers the facts (the running Python, the target interpreter, ``nvidia-smi``);
- ``target_probe``: the script ``probe`` runs inside the target interpreter (never imported);
- ``browser``: the system Chromium the real-browser test needs (``--dev`` only; apt-get);
- ``execute``: runs the commands and prints the plan, the summary and failures.
"""

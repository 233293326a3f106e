"""Files: checkpoints, their formats, atomic writes and owned output folders.

- :mod:`robustsnn.io.atomic`: every file is written atomically (a temp file and ``os.replace``).
- :mod:`robustsnn.io.checkpoint`: the checkpoint file, safetensors weights + JSON metadata,
  validated on load; nothing is ever unpickled.
- :mod:`robustsnn.io.formats`: registries of model structure that checkpoint loading reads and
  other modules fill (body transforms, non-zoo architectures); imports nothing of robustsnn.
- :mod:`robustsnn.io.models`: ANN and SNN checkpoints as ready-to-use models (``load_model``,
  ``save_ann``, ``save_snn``).
- :mod:`robustsnn.io.folder_lock`: output folders owned by one live process at a time.

This package re-exports nothing: ``robustsnn.io.models`` imports the model layers, while the
spiking core imports ``robustsnn.io.formats``; importing the package must not pull in either.
"""

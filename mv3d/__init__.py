"""mv3d: the command line, input preprocessing and matting, the image -> views -> mesh job, the web demo,
reconstruction and export, and the embedded default model (`mv3d/default_model/`)."""

__version__ = "0.1.0"

"""mv3d: the command line, input preprocessing, the image -> views -> mesh job, reconstruction and export."""

__version__ = "0.1.0"

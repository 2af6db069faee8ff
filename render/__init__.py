"""render/: the camera convention, mesh loading, renderers, procedural objects, Objaverse access and the
orbit-dataset format (read, write, validate, render at scale)."""

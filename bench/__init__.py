"""Performance and quality measurements of mv3d (run each as a script or, where it says so, as ``python -m bench.NAME``)."""

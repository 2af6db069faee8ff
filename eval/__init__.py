"""eval/: view and mesh metrics, the benchmark runner and its reports."""

"""asv benchmarks of nntk_array (``asv run --python=same``) and side-by-side comparison scripts."""

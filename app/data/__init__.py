"""Data files shipped inside the mjq package (read with importlib.resources)."""

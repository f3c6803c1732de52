"""Reading images, split files and few-shot sampling; dataset loaders; the fractal generator."""

"""The jobs behind the commands that read data and write a folder: train, evaluate, predict,
sample. Each module holds one job: its settings dataclass (every field a command-line option,
gcpl.settings) and the function that runs it. The public entry points are re-exported by
gcpl.api and by the top-level package."""

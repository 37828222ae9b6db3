"""Label noise: simulate it, audit labels (find label issues, estimate noise), learn through it."""

__all__: list[str] = []

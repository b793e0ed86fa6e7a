"""Comparisons of lifelong's runs against other continual-learning libraries (optional extras)."""

__all__: list[str] = []

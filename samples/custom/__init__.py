"""Custom sample: the smallest complete `Dataset` subclass, as a tutorial."""

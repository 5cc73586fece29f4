"""Thin setup.py for tools that still call it; configuration lives in pyproject.toml."""
from setuptools import setup

setup()

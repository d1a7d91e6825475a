"""Command line: a thin veneer that turns arguments into Recipes and library calls."""

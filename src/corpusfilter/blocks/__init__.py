"""Built-in blocks. Importing a block module registers it; the package itself imports nothing heavy."""

"""The built-in gears, one module (or package) each; the registry maps type names to them."""

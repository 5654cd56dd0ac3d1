"""Built-in protocol files (TOML), shipped as ``hashbench.protocols``."""

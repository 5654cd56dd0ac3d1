"""Built-in hashing methods, one module per method (shipped as ``hashbench.methods``).

Every module here is imported by the registry on first use; a module registers its
classes with ``@hashbench.registry.register``. No import list to maintain.
"""

"""The command line: ``run``, ``sandbox`` and ``render`` (where objects are constructed)."""

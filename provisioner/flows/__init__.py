"""The flows: one module per flow, each a pure ``decide`` and a thin executor over the ports."""

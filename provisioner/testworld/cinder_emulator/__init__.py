"""The Cinder emulator: Keystone v3 + Block Storage v3 over real HTTP, with faults."""

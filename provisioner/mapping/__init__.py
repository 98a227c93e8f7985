"""The pure mapping: connection info + StorageClass + claim -> PersistentVolume (and Secret)."""

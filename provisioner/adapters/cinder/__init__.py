"""The Cinder adapter: cinderclient + keystoneauth1 behind ``ports.CinderPort``."""

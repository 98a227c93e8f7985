"""Real OpenStack Cinder in one subprocess, with our file-backed test driver."""

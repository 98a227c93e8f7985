"""Fake host tools (rbd, iscsiadm, udevadm, multipath, filesystem tools) and the FakeWorld harness."""

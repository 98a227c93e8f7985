"""attach.settings: environment, flags, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from attach.settings import SPECS, Settings, env_name, load
from provisioner.domain.errors import ConfigError


def test_defaults_are_the_real_host_paths() -> None:
    """Without env or flags the agent talks to /sys, /dev and the proc mount table."""
    s = load({})
    assert (Path("/sys"), Path("/dev"), Path("/proc/self/mountinfo"), False) == (
        s.sysfs_root,
        s.dev_root,
        s.mountinfo,
        s.test_dev_root,
    )


def test_environment_then_flags() -> None:
    """A flag value beats the environment variable, which beats the default."""
    env = {"CINDER_ATTACH_UDEV_TRIGGER_AFTER": "2", "CINDER_ATTACH_SYSFS_ROOT": "/tmp/sys"}
    s = load(env, {"udev_trigger_after": "0.5", "sysfs_root": None})
    assert (0.5, Path("/tmp/sys")) == (s.udev_trigger_after, s.sysfs_root)


def test_lists_and_booleans_parse() -> None:
    """Rescan times are a comma-separated list; booleans accept true/false words."""
    s = load({"CINDER_ATTACH_ISCSI_RESCAN_AT": "1, 2.5", "CINDER_ATTACH_FORCE_UNMAP": "yes"})
    assert ((1.0, 2.5), True) == (s.iscsi_rescan_at, s.force_unmap)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CINDER_ATTACH_MAP_TIMEOUT": "soon"}, "CINDER_ATTACH_MAP_TIMEOUT"),
        ({"CINDER_ATTACH_KILL_GRACE": "0"}, "CINDER_ATTACH_KILL_GRACE"),
        ({"CINDER_ATTACH_FORCE_UNMAP": "maybe"}, "CINDER_ATTACH_FORCE_UNMAP"),
        ({"CINDER_ATTACH_UDEV_TRIGGER_AFTER": "100"}, "CINDER_ATTACH_UDEV_TRIGGER_AFTER"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], field: str) -> None:
    """Malformed or contradictory settings raise ConfigError naming the environment variable."""
    with pytest.raises(ConfigError) as err:
        load(env)
    assert field == err.value.field


def test_every_field_has_a_documented_spec() -> None:
    """Each Settings field has help text (and so an env var and a flag)."""
    assert set(Settings.__dataclass_fields__) == set(SPECS)
    assert "CINDER_ATTACH_STATE_DIR" == env_name("state_dir")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CINDER_ATTACH_MAP_TIMEOUT": "nan"}, "CINDER_ATTACH_MAP_TIMEOUT"),
        ({"CINDER_ATTACH_MAP_TIMEOUT": "inf"}, "CINDER_ATTACH_MAP_TIMEOUT"),
        ({"CINDER_ATTACH_POLL_INTERVAL": "-1"}, "CINDER_ATTACH_POLL_INTERVAL"),
        ({"CINDER_ATTACH_UNMAP_RETRIES": "2.5"}, "CINDER_ATTACH_UNMAP_RETRIES"),
        ({"CINDER_ATTACH_ISCSI_RESCAN_AT": "1,nan"}, "CINDER_ATTACH_ISCSI_RESCAN_AT"),
        ({"CINDER_ATTACH_KUBELET_DIR": "var/lib/kubelet"}, "CINDER_ATTACH_KUBELET_DIR"),
        ({"CINDER_ATTACH_KUBELET_DIR": "/var/lib/../kubelet"}, "CINDER_ATTACH_KUBELET_DIR"),
        ({"CINDER_ATTACH_ISCSI_ROOT": "etc/iscsi"}, "CINDER_ATTACH_ISCSI_ROOT"),
    ],
)
def test_strict_numbers_and_directories(env: dict[str, str], field: str) -> None:
    """NaN/infinity, negative or fractional counts and relative directories name their variable."""
    with pytest.raises(ConfigError) as err:
        load(env)
    assert field == err.value.field


def test_kubelet_dir_and_iscsi_root_defaults() -> None:
    """Staging paths are checked against /var/lib/kubelet; CHAP secrets go to /etc/iscsi's node DB."""
    s = load({})
    assert (Path("/var/lib/kubelet"), Path("/etc/iscsi")) == (s.kubelet_dir, s.iscsi_root)
    assert Path("/k") == load({"CINDER_ATTACH_KUBELET_DIR": "/k"}).kubelet_dir

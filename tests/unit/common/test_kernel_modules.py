"""modules.dep resolution (services/common/kernel_modules.py), shared by the image build's
initramfs and the imagestore's customisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.kernel_modules import ModuleNotFound, ModulesDep, module_name

# The shape of a Debian 6.1 modules.dep: compressed paths, dependencies in depmod's order.
DEP = """\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz: kernel/lib/crc32c_generic.ko.zst
kernel/lib/crc32c_generic.ko.zst:
kernel/drivers/virtio/virtio_pci.ko.gz: kernel/drivers/virtio/virtio-ring.ko
kernel/drivers/virtio/virtio-ring.ko:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/virtio/virtio-ring.ko kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:

"""


def test_each_module_comes_after_everything_it_needs_and_only_once() -> None:
    # Execute
    order = ModulesDep.parse(DEP).load_order(["ext4", "jbd2"])

    # Verify: depth first in depmod's order; jbd2 was already there when asked for
    assert order == ["crc16", "mbcache", "crc32c_generic", "jbd2", "ext4"]


def test_names_drop_the_compression_suffix_and_read_dashes_as_underscores() -> None:
    # Setup
    modules = ModulesDep.parse(DEP)

    # Verify
    assert [module_name(p) for p in ("a/ext4.ko.xz", "a/b.ko.zst", "a/c.ko.gz", "a/nf-x.ko", "d.ko")] == ["ext4", "b", "c", "nf_x", "d"]
    assert modules.load_order(["virtio-pci"]) == ["virtio_ring", "virtio_pci"]
    assert modules.path("virtio_ring") == "kernel/drivers/virtio/virtio-ring.ko"
    assert modules.path("ext4") == "kernel/fs/ext4/ext4.ko.xz"


def test_skip_leaves_out_what_is_already_loaded() -> None:
    # Setup: the initramfs loads the boot modules first, then the network ones
    modules = ModulesDep.parse(DEP)
    boot = modules.load_order(["virtio_pci"])

    # Execute
    net = modules.load_order(["virtio_net"], skip=boot)

    # Verify
    assert net == ["failover", "virtio_net"]


def test_a_module_modules_dep_does_not_list_is_refused_by_name() -> None:
    # Setup: one asked for, and one only a dependency names
    modules = ModulesDep.parse(DEP + "kernel/x.ko: kernel/gone.ko\n")

    # Execute / Verify
    with pytest.raises(ModuleNotFound) as asked:
        modules.load_order(["ext4", "nosuch"])
    with pytest.raises(ModuleNotFound) as needed:
        modules.load_order(["x"])
    assert (asked.value.name, needed.value.name) == ("nosuch", "gone")
    assert isinstance(asked.value, ValueError)


def test_a_dependency_cycle_is_refused() -> None:
    # Setup
    modules = ModulesDep.parse("a.ko: b.ko\nb.ko: a.ko\n")

    # Execute / Verify
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        modules.load_order(["a"])


def test_read_takes_the_release_directory(tmp_path: Path) -> None:
    # Setup
    (tmp_path / "modules.dep").write_text(DEP)

    # Execute / Verify
    assert ModulesDep.read(tmp_path).load_order(["mbcache"]) == ["mbcache"]

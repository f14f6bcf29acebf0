"""The Store contract on the in-memory store and on a real (private, one-member) etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.common.etcd_store import EtcdStore
from services.common.memory_store import MemoryStore
from services.common.store import Store
from tests import private_etcd
from tests.contract.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()

    async def compact(self, store: Store, revision: int) -> None:
        assert isinstance(store, MemoryStore)
        store.compact(revision)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with private_etcd.running(tmp_path_factory.mktemp("etcd"), short_leases=True) as endpoints:
        yield endpoints


class TestEtcdStore(StoreContract):
    @pytest.fixture
    async def store(self, etcd: list[str]) -> AsyncIterator[EtcdStore]:
        store = EtcdStore(etcd)
        await store.connect()
        yield store
        await store.close()

    async def compact(self, store: Store, revision: int) -> None:
        assert isinstance(store, EtcdStore)
        await store.client.kv.compact(revision)  # type: ignore[union-attr]

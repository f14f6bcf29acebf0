"""WNoDeS Python SDK.

    from clients.wnodes_client import Client
    with Client() as wn:
        op = wn.create_vm("tiny", vcpu_count=1, memory_mib=256)
        vm = op.result()
"""

from clients.wnodes_client._client import Client, RunResult
from clients.wnodes_client._errors import WnodesRpcError
from clients.wnodes_client._operations import OperationHandle

__all__ = ["Client", "OperationHandle", "RunResult", "WnodesRpcError"]

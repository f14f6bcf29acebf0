"""A whole WNoDeS deployment on one machine, on loopback: etcd x3, nameserver x3, imagestore,
hypervisor agents and the gateway, as processes with their logs and PIDs in one state directory.
Used by ``wnodes-admin stack``, ``make run`` and the integration and end-to-end tests."""

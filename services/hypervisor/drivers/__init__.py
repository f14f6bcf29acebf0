"""Hypervisor drivers, selected by name in the agent's configuration."""

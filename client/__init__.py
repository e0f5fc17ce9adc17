"""The cloudhsm-local client: configuration, the end-to-end channel, the cluster view,
the Python library, the daemon, ``cloudhsm-cli`` and ``cloudhsm-configure``."""

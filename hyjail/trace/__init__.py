"""The trace backend: jail rules held by a ptrace supervisor where namespaces are missing or
denied. Loaded only by jails that use it (python-ptrace alone costs tens of milliseconds)."""

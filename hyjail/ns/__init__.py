"""The namespace backend: what runs inside the new namespaces, from unshare to exec.

`jail` is the jail-side story (pid 1), `mounts` its filesystem plan, `init` the reaper and the
command's exec, `control` the channel between the supervisor and pid 1.
"""

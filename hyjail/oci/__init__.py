"""hyjail as an OCI runtime (`hyjail-oci`): runc's command line (create, start, state, kill,
delete, exec, …) over an OCI bundle, so that podman, containerd and Kubernetes run their
containers as jails on every backend. `config` reads the bundle's config.json into typed data;
the runtime maps it onto a jail and keeps the container's state.
"""

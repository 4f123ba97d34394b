"""Jupyter integration: run workspace notebooks from JupyterLab or VS Code on a Brickyard cluster.

How the pieces fit (see README "Jupyter"):

- ``kernels`` (workspace side): ``POST /api/2.0/brickyard/kernels/create`` starts a kernel attached to a
  cluster's driver, as the caller, with the same runtime as notebooks and jobs; it lives on the
  workspace host and listens on loopback only.
- ``relay`` (workspace side): a WebSocket at ``/api/2.0/brickyard/kernels/channels`` that carries the
  kernel's Jupyter channels (shell, control, stdin, iopub) over HTTP with the user's token. Messages are
  re-signed at both ends, so the kernel's key never leaves the workspace.
- ``proxy`` (user side): the process a kernelspec starts. It binds the ports of the connection file
  Jupyter gave it and bridges them to the relay, so any Jupyter frontend (JupyterLab, VS Code, nbclient)
  sees an ordinary local kernel while the code runs on the cluster, with streaming and rich outputs.
- ``contents`` (user side): a Jupyter Server ContentsManager over the Workspace API (JUPYTER
  import/export), so a notebook saved in JupyterLab is the workspace object that jobs run.
- ``launch``: ``brickyard jupyter`` writes the kernelspecs and starts JupyterLab wired to all this.
"""

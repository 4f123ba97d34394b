"""MIME types the notebook runtime publishes and the workspace understands."""

# A Spark or pandas DataFrame shown with display(): {"schema": [...], "data": [[...]], "truncated": bool}
TABLE_MIME = "application/vnd.brickyard.table+json"

# dbutils.notebook.exit(value): {"value": "..."}; the notebook ends with success after this cell.
NOTEBOOK_EXIT_MIME = "application/vnd.brickyard.notebook-exit+json"

# dbutils.library.restartPython(): {"pid": <the kernel process asking>}; the workspace restarts the kernel's
# process once the cell has ended (contexts, notebook jobs, JupyterLab kernels).
RESTART_PYTHON_MIME = "application/vnd.brickyard.restart-python+json"

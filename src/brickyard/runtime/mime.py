"""MIME types the notebook runtime publishes and the workspace understands."""

# A Spark or pandas DataFrame shown with display(): {"schema": [...], "data": [[...]], "truncated": bool}
TABLE_MIME = "application/vnd.brickyard.table+json"

# dbutils.notebook.exit(value): {"value": "..."}; the notebook ends with success after this cell.
NOTEBOOK_EXIT_MIME = "application/vnd.brickyard.notebook-exit+json"

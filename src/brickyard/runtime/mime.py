"""MIME types the notebook runtime publishes and the workspace understands."""

# A Spark or pandas DataFrame shown with display(): {"schema": [...], "data": [[...]], "truncated": bool}
TABLE_MIME = "application/vnd.brickyard.table+json"

"""Everything a flow asks for: data, the record, training, the task kinds, analysis, reports and claims, each tier a
folder that imports only the folders below it."""

"""Reports: MLflow runs -> pandas -> seaborn figures, tables and executed notebooks.

Imports only mlflow, pandas, numpy, matplotlib/seaborn and the Jupyter tools, never the
harness: a report reads what the harness logged, so it can judge any version of it.
"""


class ReportError(Exception):
    """A report cannot be made; the message names the store, experiment, run or file at fault."""

"""Scale-out: the Ray executor, its workers, shared tuning studies, the PostgreSQL + MLflow server."""

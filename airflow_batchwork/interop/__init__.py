"""Optional bridges to other Airflow packages; nothing here is imported unless that package asks for it."""

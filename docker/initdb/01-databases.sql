-- Extra databases on the TimescaleDB server: Airflow metadata and the MLflow backend store.
CREATE DATABASE airflow OWNER entasis;
CREATE DATABASE mlflow OWNER entasis;
\c entasis
CREATE EXTENSION IF NOT EXISTS timescaledb;

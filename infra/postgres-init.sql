-- One database per engine, created when the PostgreSQL volume is first initialised.
CREATE DATABASE optuna;
CREATE DATABASE mlflow;
CREATE DATABASE prefect;

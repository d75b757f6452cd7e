-- The inference log's database, owned by the application role (as on the local profile).
CREATE DATABASE @MONITORING_DATABASE@ OWNER @DB_USER@;

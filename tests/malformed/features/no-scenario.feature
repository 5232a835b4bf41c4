Feature: region failover
  A feature without any scenario.

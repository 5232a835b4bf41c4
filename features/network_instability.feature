@dr_drill @level1 @monthly
Feature: Network instability drill
  K-ERP's DR plan, level 1 (minor) disaster: transient network instability between the
  apps and their data stores. Latency with jitter, connection resets and a short partition
  hit the app-to-database link, then the app-to-Redis link; nothing acknowledged is lost,
  no failover happens, and the services recover within the level's expected downtime on
  the drill clock.

  Background:
    Given the embedded lab is up
    And a drill of kind "network-instability" is recording
    And the drill clock runs at 0.01 of the plan's clock

  Scenario: The apps' links to the database and to Redis are unstable, one after the other
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the link from the apps to the database has 150 ms latency with 100 ms jitter for 1.5 seconds
    And connections from the apps to the database are reset for 0.5 seconds
    And the link from the apps to the database is cut for 0.8 seconds
    And the link from the apps to Redis has 150 ms latency with 100 ms jitter for 1.5 seconds
    And connections from the apps to Redis are reset for 0.5 seconds
    And the link from the apps to Redis is cut for 0.8 seconds
    Then every service keeps or regains service within the level 1 downtime
    And no failover happened
    # post_test
    When the workload stops and the final state is read
    Then nothing acknowledged was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives

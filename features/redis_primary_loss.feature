@dr_drill @level2 @monthly
Feature: Redis primary loss drill
  K-ERP's DR plan, level 2 (moderate) disaster: the Redis (Valkey) primary is lost.
  Recovery is semi-automatic: the replica is promoted and the apps use it. Sessions are
  kept within authentication's RPO, vouchers are not affected, and afterwards the old
  primary rejoins as a replica and takes its role back.

  Background:
    Given the embedded lab is up
    And a drill of kind "redis-primary-loss" is recording
    And the drill clock runs at 0.01 of the plan's clock

  Scenario: The Redis primary dies and its replica takes over
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the Redis primary dies
    And the Redis replica is promoted and the apps use it
    Then every service keeps or regains service within the level 2 downtime
    And no failover happened
    # post_test
    When the workload stops and the final state is read
    Then sessions are kept within the RPO of authentication
    And no acknowledged voucher or tax invoice was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the old Redis primary rejoins as a replica and takes its role back
    Then Redis is back in its starting shape

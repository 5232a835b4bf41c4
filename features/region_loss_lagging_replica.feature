@dr_drill @level3 @semiannual @annual
Feature: Region loss while the DR replica lags
  K-ERP's DR plan, level 3 (major) disaster: the whole primary region is lost while the DR
  replica has not received the last seconds of WAL. The replication-lag pre-condition is degraded
  on purpose (lab only); the failover proceeds, the RPO is above zero and measured exactly, and the
  failback keeps the writes the failover lost with the old primary's data, never dropping them.

  Background:
    Given the embedded lab is up
    And a drill of kind "region-loss-lagging-replica" is recording

  Scenario: The primary region is lost while the WAL stream to the DR standby is held
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And the pre_test item "replica_lag" is degraded on purpose in the lab
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    And the gate "dr_region_switch" is approved for the lab
    # during_test
    When the WAL stream to the DR standby is held for 3 seconds under load
    Then the DR standby is behind the primary
    When the primary region fails
    And the runbook fails over to the DR region
    And the held WAL stream is released
    Then the global endpoint routes to the DR region after 30 seconds
    And every catalog service answers through the global endpoint after 60 seconds
    # post_test
    When the workload stops and the final state is read on the new primary
    Then the acknowledged writes lost are measured exactly and above zero
    And no acknowledged write was lost beyond the plan's RPO
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the runbook fails back to the primary region
    Then the global endpoint routes to the primary region after 60 seconds
    And the lost writes are kept aside with the old primary's data

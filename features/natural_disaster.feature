@dr_drill @level4 @annual @semiannual
Feature: Natural disaster drill
  K-ERP's DR plan, level 4 (catastrophic) disaster: a natural disaster takes the
  primary region and the backups kept there. The plan's checklist is executed
  against the embedded lab: pre_test evidence, the region and its backup bucket
  lost under load, recovery in the DR region, the database restored from the
  DR-region copies alone (base backup and WAL) with its RPO measured, and the
  failback.

  Background:
    Given the embedded lab is up
    And a drill of kind "natural-disaster" is recording

  Scenario: The primary region and its backups are lost and the database is restored from the DR-region copies
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And a base backup of the live primary is copied to the DR region
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    And the gate "dr_region_switch" is approved for the lab
    And the gate "database_point_in_time_recovery" is approved for the lab
    And the workload has run for 7 seconds
    # during_test
    When the primary region's backup bucket becomes unavailable
    And the primary region fails
    And the runbook fails over to the DR region
    Then the global endpoint routes to the DR region after 30 seconds
    When the database is restored from the DR-region copies into a new server
    Then the restored database passes the integrity checks within the plan's RPO
    # post_test
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost beyond the plan's RPO
    And the data integrity checks pass
    When the runbook fails back to the primary region
    And the primary region's backup bucket is available again
    Then the global endpoint routes to the primary region after 60 seconds

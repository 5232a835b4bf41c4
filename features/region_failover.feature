@dr_drill @level3 @ci @semiannual @annual
Feature: Region failover drill
  K-ERP's DR plan, level 3 (major) disaster: the whole primary region is lost.
  The plan's checklist is executed against the embedded lab: pre_test evidence,
  the failure under load, recovery in the DR region in catalog order, and
  post_test measurement of the achieved RTO and RPO per service.

  Background:
    Given the embedded lab is up
    And a drill of kind "region-failover" is recording

  @disaster_level_3
  Scenario: The primary region is lost under load and K-ERP recovers in the DR region
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 4 ledger writers create vouchers through the global endpoint at 200 writes per second
    # the DR switch is approved before any fault (lab only: elsewhere `drill run --approve dr_region_switch`)
    And the gate "dr_region_switch" is approved for the lab
    # during_test
    When the primary region fails
    And the runbook fails over to the DR region
    Then the global endpoint routes to the DR region after 30 seconds
    And every catalog service answers through the global endpoint after 60 seconds
    # post_test
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost beyond the plan's RPO
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the runbook fails back to the primary region
    Then the global endpoint routes to the primary region after 60 seconds

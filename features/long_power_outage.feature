@dr_drill @level4 @annual
Feature: Long power outage of the primary region
  K-ERP's DR plan, level 4 (catastrophic) disaster: the primary region loses power and stays down
  past the outage window. The DR region runs alone, then the old region returns as the new standby
  of the DR region and catches up; the annual drill finally fails back to the primary region.

  Background:
    Given the embedded lab is up
    And a drill of kind "long-power-outage" is recording

  Scenario: The primary region stays down, the DR region runs alone, the old region rejoins as its standby
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    And the gate "dr_region_switch" is approved for the lab
    # during_test
    When the primary region fails
    And the runbook fails over to the DR region
    Then the global endpoint routes to the DR region after 30 seconds
    And every catalog service answers through the global endpoint after 60 seconds
    When the DR region runs alone for 5 seconds
    Then the DR region served every write while the primary region stayed down
    When the primary region returns as the standby of the DR region
    Then replication to the primary region catches up after 30 seconds
    # post_test
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost beyond the plan's RPO
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the runbook fails back to the primary region
    Then the global endpoint routes to the primary region after 60 seconds

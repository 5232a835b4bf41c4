@dr_drill @level3 @semiannual @annual
Feature: Data corruption drill
  K-ERP's DR plan, level 3 (major) disaster: data corruption. Under load, the
  lines of a few vouchers are changed outside the application and the ledger no
  longer balances. The plan's checklist is executed against the embedded lab:
  pre_test evidence, detection by the data integrity checks, the repair from a
  point-in-time recovery into a new server (only the damaged rows are re-copied
  into the live database) and post_test measurement of the achieved RTO and RPO.

  Background:
    Given the embedded lab is up
    And a drill of kind "data-corruption" is recording

  Scenario: Corrupted voucher lines are detected and repaired from point-in-time recovery
    # pre_test
    Given a recent backup of the primary database exists
    And a base backup of the live primary is in the backup bucket
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # the recovery is approved before any fault (lab only: elsewhere `drill run --approve ...`)
    And the gate "database_point_in_time_recovery" is approved for the lab
    # during_test
    When the lines of 5 vouchers are changed outside the application
    Then the data integrity checks name every unbalanced voucher after 30 seconds
    When the damaged rows are re-copied from a server recovered to just before the corruption
    # post_test
    And the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost beyond the plan's RPO
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives

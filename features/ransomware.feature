@dr_drill @level4 @annual
Feature: Ransomware drill
  K-ERP's DR plan, level 4 (catastrophic) disaster: a ransomware attack. One
  tenant's rows are encrypted in place and its voucher lines deleted. The plan's
  checklist is executed against the embedded lab: pre_test evidence, detection
  by the data integrity checks, the tenant restored from the base backup and the
  archived WAL into a new server, verified there against a fingerprint taken
  before the attack, then its rows restored into the live database while the
  other tenants are never written, and post_test measurement.

  Background:
    Given the embedded lab is up
    And a drill of kind "ransomware" is recording

  Scenario: A tenant encrypted by ransomware is restored from backup and point-in-time recovery
    # pre_test
    Given a recent backup of the primary database exists
    And a base backup of the live primary is in the backup bucket
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    And the gate "database_point_in_time_recovery" is approved for the lab
    And the rows of every company are fingerprinted
    # during_test
    When ransomware encrypts the rows of company 3
    Then the data integrity checks detect the damage after 30 seconds
    When company 3 is restored from a server recovered to just before the attack
    # post_test
    Then the rows of company 3 match their fingerprint from before the attack
    And the rows of the other companies are unchanged
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost beyond the plan's RPO
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives

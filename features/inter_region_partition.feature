@dr_drill @level3 @semiannual @annual
Feature: Network partition between the regions
  K-ERP's DR plan, level 3 (major) disaster: the network between the primary and the DR region
  is cut while both regions are up, so the primary is gone from the DR region's view. The runbook
  must refuse the DR switch while the primary region still serves writes: never two writable
  primaries. Once the partition heals, replication resumes and the lab is as it was found.

  Background:
    Given the embedded lab is up
    And a drill of kind "inter-region-partition" is recording

  Scenario: The regions are partitioned and split brain is refused
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    And the gate "dr_region_switch" is approved for the lab
    # during_test
    When the network between the regions is cut
    Then the runbook refuses to fail over while the primary region serves, for 4 seconds
    And the global endpoint routes to the primary region after 5 seconds
    When the partition heals
    Then replication to the DR region resumes
    # post_test
    When the workload stops and the final state is read on the new primary
    Then every acknowledged voucher was written in the primary region
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    And the lab is as it was found

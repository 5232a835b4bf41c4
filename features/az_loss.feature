@dr_drill @level2 @monthly
Feature: Availability zone loss drill
  K-ERP's DR plan, level 2 (moderate) disaster: an availability zone of the primary region is lost.
  Zone ap-northeast-2a takes its node, the app replicas on it and the primary database with it.
  The synchronous in-region standby in zone ap-northeast-2c takes over; the region is not switched.

  Background:
    Given the embedded lab is up
    And a drill of kind "az-loss" is recording

  Scenario: Zone a of the primary region is lost under load and the in-region standby in zone c takes over
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the in-region standby streams synchronously from the primary database
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the availability zone "ap-northeast-2a" of the primary region is lost
    And the in-region standby is promoted
    Then every catalog service answers through the global endpoint again within the downtime of level 2
    And the global endpoint still routes to the primary region
    And the DR standby streams from the new primary
    # post_test
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the primary region's database fails back to its first zone
    Then the primary region's database is in its starting shape

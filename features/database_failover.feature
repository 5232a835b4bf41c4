@dr_drill @level2 @monthly
Feature: Database failover drill
  K-ERP's DR plan, level 2 (moderate) disaster: the primary database alone fails over.
  The PostgreSQL primary of the primary region is lost while the app tier keeps running;
  the synchronous in-region standby takes over and the services recover.

  Background:
    Given the embedded lab is up
    And a drill of kind "database-failover" is recording

  Scenario: The primary database is lost under load and the in-region standby takes over
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the in-region standby streams synchronously from the primary database
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the primary database of the primary region is lost
    And the in-region standby is promoted
    Then every catalog service answers through the global endpoint again within the downtime of level 2
    And the global endpoint still routes to the primary region
    And no app replica was restarted
    # post_test
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the primary region's database fails back to its first zone
    Then the primary region's database is in its starting shape

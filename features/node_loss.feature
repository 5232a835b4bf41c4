@dr_drill @level1 @monthly
Feature: Node loss drill
  K-ERP's DR plan, level 1 (minor) disaster: a single node of the primary region is lost.
  Kubernetes heals it by itself: the node's app replicas are started again on the other
  node of the region, the region is not switched and the database is not failed over.

  Background:
    Given the embedded lab is up
    And a drill of kind "node-loss" is recording

  Scenario: A node of the primary region is lost under load and its replicas come back on the other node
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the node "primary-node-1" of the primary region is lost
    Then the node "primary-node-1" is not ready and cordoned
    And the app replicas run again on the other node within the downtime of level 1
    And the global endpoint still routes to the primary region, whose database was not failed over
    # post_test
    When the workload stops and the final state is read on the new primary
    Then no acknowledged write was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives
    When the node "primary-node-1" of the primary region is back
    Then every node of the primary region is ready

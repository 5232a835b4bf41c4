@dr_drill @level1 @monthly
Feature: Pod loss drill
  K-ERP's DR plan, level 1 (minor) disaster: a single pod fails. Recovery is automatic
  (Kubernetes self-healing): the controller brings a replacement pod, no failover happens,
  nothing acknowledged is lost, and every service is back within the level's expected
  downtime on the drill clock.

  Background:
    Given the embedded lab is up
    And a drill of kind "pod-loss" is recording
    And the drill clock runs at 0.01 of the plan's clock

  Scenario: One app replica pod dies and Kubernetes heals it
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When one app replica pod of the primary region is deleted through the Kubernetes API
    Then Kubernetes brings a replacement pod within 60 seconds
    And every service keeps or regains service within the level 1 downtime
    And no failover happened
    # post_test
    When the workload stops and the final state is read
    Then nothing acknowledged was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives

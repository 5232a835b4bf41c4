@dr_drill @level2 @monthly
Feature: Popbill outage drill
  K-ERP's DR plan, level 2 (moderate) disaster: an external API (Popbill, the e-invoice
  service) is unreachable. Tax invoices fail cleanly (502, nothing committed), nothing
  else degrades, and no tax invoice number is reused or skipped.

  Background:
    Given the embedded lab is up
    And a drill of kind "popbill-outage" is recording
    And the drill clock runs at 0.01 of the plan's clock

  Scenario: The link to Popbill is cut and only tax invoices fail
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the link to Popbill is cut
    Then only the tax invoice service fails for 3 seconds
    When the link to Popbill is restored
    Then nothing else degraded
    And every service keeps or regains service within the level 2 downtime
    And no failover happened
    # post_test
    When the workload stops and the final state is read
    Then no tax invoice number was reused or skipped
    And nothing acknowledged was lost
    And the data integrity checks pass
    And every service meets its RTO and RPO objectives

@dr_drill @level3 @semiannual @annual
Feature: Security breach drill
  K-ERP's DR plan, level 3 (major) disaster: a security breach. The JWT signing key is compromised
  under load; the runbook rotates it: a new key signs, the leaked one is revoked on every replica
  of both regions, the sessions issued under it are removed, and the audit log records it. Tokens
  from before the rotation and tokens forged with the leaked key are refused; logging in again works.

  Background:
    Given the embedded lab is up
    And a drill of kind "security-breach" is recording

  Scenario: The JWT signing key leaks and the runbook rotates it and revokes the sessions
    # pre_test
    Given a recent backup of the primary database exists
    And the replication lag of the DR standby is under 60 seconds
    And the DR region is ready or scalable
    And 2 ledger writers create vouchers through the global endpoint at 100 writes per second
    # during_test
    When the JWT signing key is compromised
    Then a token forged with the leaked key is accepted by every replica
    When the runbook rotates the signing key and revokes the sessions
    Then every replica refuses the leaked key after 15 seconds
    And the token from before the rotation is refused and its session is gone
    And a token forged with the leaked key is refused by every replica
    And a fresh login after the rotation works on every replica
    And the audit log records the rotation and the revocation
    And every session the probes opened under the leaked key is revoked
    # post_test
    When the workload stops and the final state is read on the primary
    Then the data integrity checks pass
    And every service meets its RTO and RPO objectives

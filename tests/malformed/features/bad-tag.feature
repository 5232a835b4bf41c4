@smoke-test
Feature: f
  Scenario: s
    Given the embedded lab is up

Feature: a
  Scenario: s
    Given the embedded lab is up
Feature: b

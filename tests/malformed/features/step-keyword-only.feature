Feature: f
  Scenario: s
    Given
    Given the embedded lab is up

@nightly
Feature: f
  Scenario: s
    Given the embedded lab is up
